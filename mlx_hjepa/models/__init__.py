from .hjepa import HJEPA, build_hjepa, step_flops
from .predictor import Predictor
from .vit import PRESETS, VisionTransformer, build_encoder, parse_model_name, sincos_pos_embed_2d, transformer_flops

__all__ = ["HJEPA", "build_hjepa", "step_flops", "Predictor", "PRESETS", "VisionTransformer", "build_encoder",
           "parse_model_name", "sincos_pos_embed_2d", "transformer_flops"]

from .hjepa import HJEPA, step_flops
from .predictor import Predictor
from .vit import VisionTransformer, normalize_images, sincos_pos_embed_2d, transformer_flops

__all__ = ["HJEPA", "step_flops", "Predictor", "VisionTransformer", "normalize_images", "sincos_pos_embed_2d",
           "transformer_flops"]

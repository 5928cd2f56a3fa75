"""H-JEPA: context encoder, EMA target encoder, predictor and one head per hierarchy level."""

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map

from .predictor import Predictor
from .vit import VisionTransformer, build_encoder

MAX_HIERARCHIES = 4


class HJEPA(nn.Module):
    """The target encoder is frozen: it is never differentiated and changes only by `ema_update`.

    Level l (0-based) compares predictions and targets pooled over 2^l x 2^l windows of the
    patch grid; the heads sit on the predictor side only, so targets pass through no trained
    parameter.
    """

    def __init__(self, encoder: VisionTransformer, predictor_dim=384, predictor_depth=6,
                 predictor_heads=6, predictor_mlp_ratio=4.0, num_hierarchies=3):
        super().__init__()
        if not 1 <= num_hierarchies <= MAX_HIERARCHIES:
            raise ValueError(f"num_hierarchies must be between 1 and {MAX_HIERARCHIES}, got {num_hierarchies}.")
        coarsest = 2 ** (num_hierarchies - 1)
        if coarsest > min(encoder.grid_size):
            raise ValueError(f"num_hierarchies={num_hierarchies} pools {coarsest}x{coarsest} windows, larger than "
                             f"the {encoder.grid_size[0]}x{encoder.grid_size[1]} patch grid; use fewer levels.")
        self.num_hierarchies = num_hierarchies
        self.encoder = encoder
        self.target_encoder = VisionTransformer(**encoder.config())
        self.target_encoder.update(tree_map(lambda p: mx.array(p), encoder.parameters()))
        self.target_encoder.freeze()
        self.predictor = Predictor(encoder.grid_size, encoder.embed_dim, predictor_dim, predictor_depth,
                                   predictor_heads, predictor_mlp_ratio, act=encoder.act)
        self.heads = [nn.Linear(encoder.embed_dim, encoder.embed_dim) for _ in range(num_hierarchies)]
        for head in self.heads:  # start as the identity so level l begins as plain pooled I-JEPA
            head.weight = mx.eye(encoder.embed_dim)
            head.bias = mx.zeros((encoder.embed_dim,))

    @property
    def grid_size(self):
        return self.encoder.grid_size

    def ema_update(self, momentum):
        """target <- m * target + (1 - m) * context, parameter by parameter."""
        new = tree_map(lambda t, c: momentum * t + (1 - momentum) * c,
                       self.target_encoder.parameters(), self.encoder.parameters())
        self.target_encoder.update(new)


def build_hjepa(encoder_name="vit_small", img_size=224, patch_size=None, num_hierarchies=3,
                predictor_dim=384, predictor_depth=6, predictor_heads=None, predictor_mlp_ratio=4.0,
                act="gelu", **encoder_overrides):
    encoder = build_encoder(encoder_name, img_size=img_size, patch_size=patch_size, act=act, **encoder_overrides)
    heads = predictor_heads or max(1, predictor_dim // 64)
    return HJEPA(encoder, predictor_dim, predictor_depth, heads, predictor_mlp_ratio, num_hierarchies)


def step_flops(model: HJEPA, num_context, num_targets, target_len):
    """Analytic FLOPs per image of one training step: target forward on every patch, context
    encoder and predictor forward + backward (3x forward)."""
    from .vit import transformer_flops

    enc, pred = model.encoder, model.predictor
    patchify = 2 * enc.num_patches * enc.patch_size**2 * 3 * enc.embed_dim
    width = pred.predictor_embed.weight.shape[0]
    mlp_ratio = pred.blocks[0].mlp.fc1.weight.shape[0] / width if pred.blocks else 4.0
    target = patchify + transformer_flops(enc.num_patches, enc.embed_dim, enc.depth, enc.mlp_ratio)
    context = patchify + transformer_flops(num_context, enc.embed_dim, enc.depth, enc.mlp_ratio)
    predictor = num_targets * transformer_flops(num_context + target_len, width, len(pred.blocks), mlp_ratio)
    return target + 3 * (context + predictor)

"""H-JEPA: context encoder, EMA target encoder, predictor and one head per hierarchy level."""

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map

from ..rules import check_hierarchies
from .predictor import Predictor
from .vit import Linear, VisionTransformer, transformer_flops


class HJEPA(nn.Module):
    """The target encoder is frozen: it is never differentiated and changes only by `ema_update`.

    Level l (0-based) compares predictions and targets pooled over 2^l x 2^l windows of the
    patch grid; the heads sit on the predictor side only, so targets pass through no trained
    parameter.
    """

    def __init__(self, encoder: VisionTransformer, predictor_dim=384, predictor_depth=6,
                 predictor_heads=6, predictor_mlp_ratio=4.0, num_hierarchies=3):
        super().__init__()
        check_hierarchies(num_hierarchies, min(encoder.grid_size))
        self.num_hierarchies = num_hierarchies
        self.encoder = encoder
        self.target_encoder = VisionTransformer(**encoder.config())
        self.target_encoder.update(tree_map(lambda p: mx.array(p), encoder.parameters()))
        self.target_encoder.freeze()
        self.predictor = Predictor(encoder.grid_size, encoder.embed_dim, predictor_dim, predictor_depth,
                                   predictor_heads, predictor_mlp_ratio, act=encoder.act)
        self.heads = [Linear(encoder.embed_dim, encoder.embed_dim) for _ in range(num_hierarchies)]
        for head in self.heads:  # start as the identity so level l begins as plain pooled I-JEPA
            head.weight = mx.eye(encoder.embed_dim)
            head.bias = mx.zeros((encoder.embed_dim,))

    @classmethod
    def from_config(cls, config, seed=None):
        """The one model factory: `config` is {"encoder": VisionTransformer kwargs, "predictor":
        {embed_dim, depth, num_heads, mlp_ratio}, "num_hierarchies": n}, as `config()` returns it,
        as checkpoints store it and as `mlx_hjepa.config.model_config(cfg)` resolves a run's config.
        `seed` seeds MLX's generator first, so the initial weights are a function of the seed."""
        if seed is not None:
            mx.random.seed(seed)
        p = config["predictor"]
        return cls(VisionTransformer(**config["encoder"]), p["embed_dim"], p["depth"], p["num_heads"],
                   p["mlp_ratio"], config["num_hierarchies"])

    def config(self):
        return {"encoder": self.encoder.config(), "predictor": self.predictor.config(),
                "num_hierarchies": self.num_hierarchies}

    @property
    def grid_size(self):
        return self.encoder.grid_size

    def ema_update(self, momentum):
        """target <- m * target + (1 - m) * context, parameter by parameter."""
        new = tree_map(lambda t, c: momentum * t + (1 - momentum) * c,
                       self.target_encoder.parameters(), self.encoder.parameters())
        self.target_encoder.update(new)


def step_flops(config, num_context, num_targets, target_len):
    """Analytic FLOPs per image of one training step of the model `config` describes (an
    `HJEPA.config()` dict): target forward on every patch, context encoder and predictor forward
    + backward (3x forward)."""
    enc, pred = config["encoder"], config["predictor"]
    num_patches = (enc["img_size"] // enc["patch_size"]) ** 2
    patchify = 2 * num_patches * enc["patch_size"] ** 2 * 3 * enc["embed_dim"]
    target = patchify + transformer_flops(num_patches, enc["embed_dim"], enc["depth"], enc["mlp_ratio"])
    context = patchify + transformer_flops(num_context, enc["embed_dim"], enc["depth"], enc["mlp_ratio"])
    predictor = num_targets * transformer_flops(num_context + target_len, pred["embed_dim"], pred["depth"],
                                                pred["mlp_ratio"])
    return target + 3 * (context + predictor)

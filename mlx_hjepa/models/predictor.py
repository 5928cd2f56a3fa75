"""I-JEPA predictor: a narrow ViT over context tokens plus one mask token per target position."""

import mlx.core as mx
import mlx.nn as nn

from .vit import LN_EPS, Block, LayerNorm, Linear, init_like_ijepa, sincos_pos_embed_2d


class Predictor(nn.Module):
    def __init__(self, grid_size, encoder_dim, embed_dim=384, depth=6, num_heads=6, mlp_ratio=4.0, act="gelu"):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.encoder_dim, self.embed_dim, self.depth = encoder_dim, embed_dim, depth
        self.num_heads, self.mlp_ratio, self.act = num_heads, mlp_ratio, act
        self.predictor_embed = Linear(encoder_dim, embed_dim)
        self.blocks = [Block(embed_dim, num_heads, mlp_ratio, act) for _ in range(depth)]
        self.predictor_norm = LayerNorm(embed_dim, eps=LN_EPS)
        self.predictor_proj = Linear(embed_dim, encoder_dim)
        self._pos_embed = mx.array(sincos_pos_embed_2d(embed_dim, *self.grid_size))
        init_like_ijepa(self)
        self.mask_token = mx.clip(mx.random.normal((1, 1, embed_dim)) * 0.02, -0.04, 0.04)

    def config(self):
        """The widths that rebuild this predictor (the encoder side comes from the encoder)."""
        return dict(embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)

    def __call__(self, context_tokens, context_indices, target_indices):
        """context_tokens (B, Kc, D_enc), context_indices (B, Kc), target_indices (B, M, Kt)
        -> predictions (B, M, Kt, D_enc). All M target blocks run in one batched pass."""
        B, Kc, _ = context_tokens.shape
        _, M, Kt = target_indices.shape
        x = self.predictor_embed(context_tokens) + self._pos_embed[context_indices].astype(context_tokens.dtype)
        x = mx.repeat(x[:, None], M, axis=1).reshape(B * M, Kc, -1)
        queries = self.mask_token + self._pos_embed[target_indices.reshape(B * M, Kt)]
        x = mx.concatenate([x, queries.astype(x.dtype)], axis=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.predictor_proj(self.predictor_norm(x[:, Kc:]))
        return x.reshape(B, M, Kt, -1)

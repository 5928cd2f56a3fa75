"""Vision Transformer encoder with timm's parameter names and shapes.

Images are channels-last (B, H, W, 3), as MLX convolutions expect. There is no class
token; the 2-D sin-cos position embedding is fixed (stored under a leading underscore,
so it is neither optimised nor saved with the parameters).
"""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .._ops import fast_gelu, layer_norm, linear
from ..rules import IMAGENET_MEAN, IMAGENET_STD, check_patch_size

LN_EPS = 1e-6


def normalize_images(images_uint8, dtype=mx.float32):
    """uint8 (B, H, W, 3) -> normalised float, on the device: the encoder's expected input."""
    x = images_uint8.astype(mx.float32) / 255.0
    x = (x - mx.array(IMAGENET_MEAN)) / mx.array(IMAGENET_STD)
    return x.astype(dtype)


def sincos_pos_embed_2d(embed_dim, grid_h, grid_w):
    """Fixed 2-D sin-cos position embedding (MAE / I-JEPA layout), shape (grid_h*grid_w, embed_dim).

    Half the channels encode the row, half the column; each half is [sin, cos] of
    position times 1/10000^(2i/d).
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be divisible by 4 for 2-D sin-cos embeddings, got {embed_dim}.")
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64), indexing="ij")

    def encode(pos):
        angles = pos.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    # Column first, then row: the order MAE and I-JEPA use, so exported pos_embed matches theirs.
    emb = np.concatenate([encode(cols), encode(rows)], axis=1)
    return emb.astype(np.float32)


def gelu_exact(x):
    return nn.gelu(x)


# "fast_gelu": multiply/add/divide only, within 5e-6 of exact GELU, 3.5x cheaper inside mx.compile
# on CPUs (benchmarks/cpu_ops.py); exported weights still load into timm's exact-GELU ViT.
ACTIVATION_FNS = {"gelu": gelu_exact, "fast_gelu": fast_gelu}  # rules.ACTIVATIONS once "auto" is resolved


def resolve_activation(act):
    """"auto" -> fast_gelu where erf is the bottleneck (MLX's CPU backend runs it as scalar code on
    one thread), exact gelu elsewhere (GPU kernels make erf cheap, so exact costs nothing there)."""
    if act != "auto":
        return act
    return "fast_gelu" if mx.default_device().type == mx.DeviceType.cpu else "gelu"


class Linear(nn.Linear):
    """nn.Linear (same parameters, names and initialisation) with `_ops.linear`'s backward: the
    weight gradient comes back in the weight's row-major layout."""

    def __call__(self, x):
        if "bias" in self:
            return linear(x, self["weight"], self["bias"])
        return x @ self["weight"].T


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (same parameters, names and initialisation) computed by `_ops.layer_norm`:
    on MLX's CPU backend its reductions are matrix products (2.4x faster at ViT-S/16 @224)."""

    def __call__(self, x):
        if "weight" in self and "bias" in self:
            return layer_norm(x, self["weight"], self["bias"], self.eps)
        return super().__call__(x)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, in_chans, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def __call__(self, x):
        x = self.proj(x)  # (B, H/p, W/p, D)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class Attention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = Linear(dim, dim)

    def __call__(self, x):
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads)
        qkv = qkv.transpose(2, 0, 3, 1, 4)  # (3, B, heads, N, head_dim)
        # split, not qkv[0], qkv[1], qkv[2]: the same values, but the backward of three indexings
        # builds three full-size zero arrays and scatters into them; split's backward is one
        # concatenate (2.3x faster attention fwd+bwd at the predictor's shapes on the CPU).
        q, k, v = (t.squeeze(0) for t in mx.split(qkv, 3, axis=0))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(0, 2, 1, 3).reshape(B, N, D))


class Mlp(nn.Module):
    def __init__(self, dim, hidden, act):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)
        self._act = act

    def __call__(self, x):
        return self.fc2(self._act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, act="gelu"):
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), ACTIVATION_FNS[act])

    def __call__(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def init_like_ijepa(module, std=0.02):
    """Truncated-normal(0.02) linear/conv weights, zero biases, unit LayerNorms, then I-JEPA's
    depth rescaling of each block's output projections (divide by sqrt(2 * layer_id))."""
    def trunc_normal(shape):
        return mx.clip(mx.random.normal(shape) * std, -2 * std, 2 * std)

    for _, m in module.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.weight = trunc_normal(m.weight.shape)
            if "bias" in m:
                m.bias = mx.zeros_like(m.bias)
        elif isinstance(m, nn.LayerNorm):
            m.weight = mx.ones_like(m.weight)
            m.bias = mx.zeros_like(m.bias)
    for i, blk in enumerate(getattr(module, "blocks", [])):
        blk.attn.proj.weight = blk.attn.proj.weight / math.sqrt(2.0 * (i + 1))
        blk.mlp.fc2.weight = blk.mlp.fc2.weight / math.sqrt(2.0 * (i + 1))


class VisionTransformer(nn.Module):
    """ViT encoder returning patch tokens (B, K, D) after the final norm."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=384, depth=12,
                 num_heads=6, mlp_ratio=4.0, act="gelu"):
        super().__init__()
        check_patch_size(patch_size)
        if img_size % patch_size:
            raise ValueError(f"image size {img_size} is not divisible by patch size {patch_size}; "
                             f"use a multiple of {patch_size}.")
        act = resolve_activation(act)  # self.act (config(), export metadata) names what ran
        if act not in ACTIVATION_FNS:
            raise ValueError(f"Unknown activation '{act}'; choose from {sorted(ACTIVATION_FNS)}.")
        self.img_size, self.patch_size = img_size, patch_size
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.embed_dim, self.depth, self.num_heads, self.mlp_ratio = embed_dim, depth, num_heads, mlp_ratio
        self.act = act
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self._pos_embed = mx.array(sincos_pos_embed_2d(embed_dim, *self.grid_size))
        self.blocks = [Block(embed_dim, num_heads, mlp_ratio, act) for _ in range(depth)]
        self.norm = LayerNorm(embed_dim, eps=LN_EPS)
        init_like_ijepa(self)

    @property
    def pos_embed(self):
        """(1, N, D) fixed position embedding, as timm stores it."""
        return self._pos_embed[None]

    def config(self):
        return dict(img_size=self.img_size, patch_size=self.patch_size, embed_dim=self.embed_dim,
                    depth=self.depth, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, act=self.act)

    def embed(self, images):
        if images.shape[1:3] != (self.img_size, self.img_size):
            raise ValueError(f"expected images of {self.img_size}x{self.img_size}, got {tuple(images.shape[1:3])}.")
        return self.patch_embed(images) + self._pos_embed.astype(images.dtype)

    def __call__(self, images, token_indices=None, return_layers=None):
        """Tokens (B, K, D). With token_indices (B, K) int, only those patches enter the blocks.

        return_layers=n additionally returns the outputs of the last n blocks (before the
        final norm) as a list, for multi-layer evaluation features.
        """
        x = self.embed(images)
        if token_indices is not None:
            x = mx.take_along_axis(x, token_indices[..., None].astype(mx.int32), axis=1)
        hidden = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if return_layers and i >= self.depth - return_layers:
                hidden.append(x)
        x = self.norm(x)
        return (x, hidden) if return_layers else x


def transformer_flops(num_tokens, dim, depth, mlp_ratio=4.0):
    """Forward multiply-add FLOPs (x2) of `depth` pre-norm blocks on `num_tokens` tokens."""
    n, d, h = num_tokens, dim, int(dim * mlp_ratio)
    per_block = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * h
    return depth * per_block

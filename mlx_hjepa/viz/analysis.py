"""What the pictures compute from an encoder: last-block attention, patch features, their PCA, neighbours.

The encoder's own forward uses the fused attention, which does not expose its weights; the
last block's weights are recomputed here from its qkv projection, leaving the model untouched.
"""

import mlx.core as mx
import numpy as np

from ..eval.knn import l2_normalize, nearest_neighbors


def last_block_attention(encoder, x):
    """Softmax attention weights (B, heads, N, N) of the last block, for normalised images x (B, H, W, 3)."""
    tokens = encoder.embed(x)
    for block in encoder.blocks[:-1]:
        tokens = block(tokens)
    attn = encoder.blocks[-1].attn
    B, N, D = tokens.shape
    qkv = attn.qkv(encoder.blocks[-1].norm1(tokens)).reshape(B, N, 3, attn.num_heads, D // attn.num_heads)
    q, k = qkv[:, :, 0].transpose(0, 2, 1, 3), qkv[:, :, 1].transpose(0, 2, 1, 3)
    weights = mx.softmax((q * attn.scale) @ k.transpose(0, 1, 3, 2), axis=-1)
    return np.array(weights, dtype=np.float32)


def patch_features(encoder, x):
    """(B, N, D) patch tokens of the last block after the final norm."""
    return np.array(encoder(x), dtype=np.float32)


def pca_rgb(features, grid):
    """First three principal components of every patch of every image, jointly, scaled to [0, 1]:
    (B, N, D) -> (B, H, W, 3) float32. The sign of each component is fixed (largest loading positive)
    so trained and random-init maps are coloured by the same rule."""
    B, N, D = features.shape
    flat = features.reshape(B * N, D).astype(np.float64)
    flat -= flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    top = vt[:3]
    components = top * np.sign(top[np.arange(len(top)), np.abs(top).argmax(axis=1)])[:, None]
    projected = flat @ components.T
    if projected.shape[1] < 3:
        projected = np.pad(projected, ((0, 0), (0, 3 - projected.shape[1])))
    low, high = np.percentile(projected, 1, axis=0), np.percentile(projected, 99, axis=0)
    rgb = np.clip((projected - low) / np.maximum(high - low, 1e-8), 0, 1)
    return rgb.reshape(B, grid[0], grid[1], 3).astype(np.float32)


def top_neighbours(bank, queries, k=5):
    """(indices, similarities) (Q, k) of each query's k most cosine-similar bank rows, most similar
    first: the k-NN evaluation's similarity and tie rule."""
    bank, queries = l2_normalize(mx.array(bank)), l2_normalize(mx.array(queries))
    idx, sims = nearest_neighbors(bank, queries, min(k, bank.shape[0]))
    idx, sims = np.array(idx), np.array(sims)
    order = np.lexsort((idx, -sims), axis=1)
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(sims, order, axis=1)

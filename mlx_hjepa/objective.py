"""Hierarchical JEPA loss, optional variance/covariance regulariser, collapse metrics.

Level l compares windows of 2^l x 2^l patches. Targets: the target encoder's tokens,
average-pooled over each window (edge windows over the patches they have), then
layer-normed (`loss.level_target: mean_of_norm` averages the layer-normed tokens instead);
level 0 is exactly I-JEPA's layer-normed token target. Predictions: the
predictor's tokens averaged over the same windows (only windows lying wholly inside a
target block, as listed by the mask sampler), then that level's head.
"""

import math

import mlx.core as mx
import numpy as np

from .rules import LEVEL_TARGETS, LOSS_TYPES


def layer_norm(x):
    return mx.fast.layer_norm(x, None, None, 1e-6)


def elementwise_loss(pred, target, loss_type):
    diff = pred - target
    if loss_type == "mse":
        return diff * diff
    abs_diff = mx.abs(diff)  # smooth-L1 with beta = 1, PyTorch's default and I-JEPA's
    return mx.where(abs_diff < 1.0, 0.5 * diff * diff, abs_diff - 0.5)


def window_counts(grid, s):
    """(Hl, Wl) number of existing patches in each s x s window of the grid (edge windows are partial)."""
    H, W = grid
    rows = np.minimum(np.arange(math.ceil(H / s)) * s + s, H) - np.arange(math.ceil(H / s)) * s
    cols = np.minimum(np.arange(math.ceil(W / s)) * s + s, W) - np.arange(math.ceil(W / s)) * s
    return np.outer(rows, cols).astype(np.float32)


def pool_grid(tokens, grid, s):
    """Average tokens (B, H*W, D) over s x s windows of the patch grid -> (B, ceil(H/s)*ceil(W/s), D)."""
    if s == 1:
        return tokens
    B, _, D = tokens.shape
    H, W = grid
    Hl, Wl = math.ceil(H / s), math.ceil(W / s)
    x = tokens.reshape(B, H, W, D)
    if (Hl * s, Wl * s) != (H, W):
        x = mx.pad(x, [(0, 0), (0, Hl * s - H), (0, Wl * s - W), (0, 0)])
    x = x.reshape(B, Hl, s, Wl, s, D).sum(axis=(2, 4))
    counts = mx.array(window_counts(grid, s))[None, :, :, None]
    return (x / counts.astype(x.dtype)).reshape(B, Hl * Wl, D)


def gather_tokens(tokens, indices):
    """tokens (B, N, D), indices (B, ...) -> (B, ..., D)."""
    B, D = tokens.shape[0], tokens.shape[-1]
    flat = indices.reshape(B, -1)
    out = mx.take_along_axis(tokens, flat[..., None], axis=1)
    return out.reshape(*indices.shape, D)


def level_targets(target_tokens, masks, grid, level, definition=LEVEL_TARGETS[0]):
    """Layer-normed, pooled targets for level `level`: (B, M, Kt, D) at level 0, (B, M, W_l, D) above.
    definition (rules.LEVEL_TARGETS): "norm_of_mean" layer-norms each window's mean token;
    "mean_of_norm" averages the window's layer-normed tokens (the level-0 targets)."""
    if level == 0:
        return gather_tokens(layer_norm(target_tokens), masks["targets"])
    if definition not in LEVEL_TARGETS:
        raise ValueError(f"Unknown level target '{definition}'; choose from {LEVEL_TARGETS}.")
    s = 2 ** level
    pooled = (layer_norm(pool_grid(target_tokens, grid, s)) if definition == "norm_of_mean"
              else pool_grid(layer_norm(target_tokens), grid, s))
    return gather_tokens(pooled, masks[f"win_idx_{level}"])


def level_predictions(predictions, masks, level):
    """Predictor tokens (B, M, Kt, D) averaged over the level's windows -> (B, M, W_l, D)."""
    if level == 0:
        return predictions
    idx, w = masks[f"pool_idx_{level}"], masks[f"pool_w_{level}"]
    B, M, Wn, S = idx.shape
    D = predictions.shape[-1]
    members = mx.take_along_axis(predictions, idx.reshape(B, M, Wn * S)[..., None], axis=2)
    members = members.reshape(B, M, Wn, S, D)
    return (members * w[..., None].astype(members.dtype)).sum(axis=3)


def l2_normalize(x, eps=1e-6):
    return x * mx.rsqrt((x * x).sum(axis=-1, keepdims=True) + eps)


def hierarchical_loss(predictions, target_tokens, masks, heads, grid, weights, loss_type="smooth_l1",
                      normalize=False, level_target=LEVEL_TARGETS[0]):
    """Weighted sum over levels of the per-image mean loss over positions, averaged over
    images. Returns (total, [loss per level]).

    normalize=True L2-normalises every prediction and target vector before the loss
    (the `loss.normalize_embeddings` key); level_target is `loss.level_target` (level_targets)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"Unknown loss type '{loss_type}'; choose from {LOSS_TYPES}.")
    total, per_level = 0.0, []
    for level, (head, weight) in enumerate(zip(heads, weights)):
        pred = head(level_predictions(predictions, masks, level))
        target = level_targets(target_tokens, masks, grid, level, level_target).astype(pred.dtype)
        if normalize:
            pred, target = l2_normalize(pred), l2_normalize(target)
        per_position = elementwise_loss(pred, target, loss_type).mean(axis=-1).astype(mx.float32)
        if level == 0:
            loss = per_position.mean()
        else:
            # Mean over each image's valid windows, then over images: the loss of a batch is then
            # the mean of its images' losses, so it splits exactly across data-parallel ranks.
            valid = masks[f"win_valid_{level}"]
            per_image = (per_position * valid).sum(axis=(1, 2)) / mx.maximum(valid.sum(axis=(1, 2)), 1.0)
            loss = per_image.mean()
        per_level.append(loss)
        total = total + weight * loss
    return total, per_level


def variance_covariance(features, eps=1e-4):
    """VICReg's variance and covariance terms on (B, D) per-image features."""
    features = features.astype(mx.float32)
    B, D = features.shape
    centred = features - features.mean(axis=0)
    std = mx.sqrt((centred * centred).sum(axis=0) / max(B - 1, 1) + eps)
    variance = mx.maximum(1.0 - std, 0.0).mean()
    cov = (centred.T @ centred) / max(B - 1, 1)
    off_diag = cov * (1.0 - mx.eye(D))
    covariance = (off_diag * off_diag).sum() / D
    return variance, covariance


def feature_std(features):
    """Mean over dimensions of the per-dimension std across the batch: near 0 means collapse."""
    features = features.astype(mx.float32)
    return mx.sqrt(((features - features.mean(axis=0)) ** 2).mean(axis=0)).mean()


def effective_rank(features):
    """RankMe effective rank exp(entropy of normalised singular values) of (N, D) features, on the CPU stream."""
    x = mx.array(features).astype(mx.float32)
    s = mx.linalg.svd(x, compute_uv=False, stream=mx.cpu)
    p = s / mx.maximum(s.sum(), 1e-12) + 1e-12
    return float(mx.exp(-(p * mx.log(p)).sum()))

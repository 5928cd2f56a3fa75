import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_hjepa.masks import block_windows
from mlx_hjepa.objective import (effective_rank, elementwise_loss, hierarchical_loss, level_targets, pool_grid,
                                 variance_covariance)


def hand_pool(grid_tokens, s):
    """Plain-loop average over s x s windows of an (H, W, D) grid, edge windows partial."""
    H, W, D = grid_tokens.shape
    out = []
    for i in range(0, H, s):
        for j in range(0, W, s):
            out.append(grid_tokens[i : i + s, j : j + s].reshape(-1, D).mean(0))
    return np.stack(out)


def np_layer_norm(x):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)


@pytest.mark.parametrize("grid,s", [((4, 4), 2), ((6, 6), 4), ((14, 14), 4), ((7, 5), 2)])
def test_pool_grid_matches_hand_pool(grid, s):
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(2, grid[0] * grid[1], 3)).astype(np.float32)
    pooled = np.array(pool_grid(mx.array(tokens), grid, s))
    for b in range(2):
        np.testing.assert_allclose(pooled[b], hand_pool(tokens[b].reshape(*grid, 3), s), rtol=1e-5, atol=1e-6)


def test_level_targets_are_layer_normed_hand_pools_at_block_windows():
    grid, level = (6, 6), 1
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(1, 36, 8)).astype(np.float32)
    # A 3x4 block at (1, 1) covers rows 1-3, cols 1-4: of the 2x2 windows only rows 2-3 x cols 2-3,
    # window (1, 1) of the 3x3 level grid, lies wholly inside (cols 4-5 would need col 5).
    w = {f"{k}_1": v for k, v in block_windows(np.array([[1]]), np.array([[1]]), 3, 4, grid, level).items()}
    valid = w["win_valid_1"][0, 0] > 0
    assert sorted(w["win_idx_1"][0, 0][valid].tolist()) == [1 * 3 + 1]
    masks = {k: mx.array(v) for k, v in w.items()}
    got = np.array(level_targets(mx.array(tokens), masks, grid, level))[0, 0][valid]
    expected = np_layer_norm(hand_pool(tokens[0].reshape(6, 6, 8), 2))[[4]]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_level_loss_ignores_windows_crossing_the_block_edge():
    grid = (4, 4)
    top, left, h, w = 1, 1, 3, 3  # rows/cols 1..3: of the 2x2 windows only the bottom-right one fits
    targets = np.array([[[(top + i) * 4 + left + j for i in range(h) for j in range(w)]]], dtype=np.int32)
    windows = block_windows(np.array([[top]]), np.array([[left]]), h, w, grid, 1)
    masks = {"targets": targets, **{f"{k}_1": v for k, v in windows.items()}}
    masks = {k: mx.array(v) for k, v in masks.items()}
    rng = np.random.default_rng(2)
    target_tokens = mx.array(rng.normal(size=(1, 16, 4)).astype(np.float32))
    preds = rng.normal(size=(1, 1, 9, 4)).astype(np.float32)
    heads = [nn.Identity(), nn.Identity()]
    _, (l0, l1) = hierarchical_loss(mx.array(preds), target_tokens, masks, heads, grid, (1.0, 1.0), "mse")
    # level 1 by hand: the window rows 2-3, cols 2-3 = block-local positions 4, 5, 7, 8
    pooled_pred = preds[0, 0, [4, 5, 7, 8]].mean(0)
    pooled_tgt = np_layer_norm(hand_pool(np.array(target_tokens)[0].reshape(4, 4, 4), 2)[3])
    np.testing.assert_allclose(l1.item(), ((pooled_pred - pooled_tgt) ** 2).mean(), rtol=1e-5)
    # changing predictions outside that window leaves level 1 untouched, and moves level 0
    moved = preds.copy()
    moved[0, 0, [0, 1, 2, 3, 6]] += 3.0
    _, (m0, m1) = hierarchical_loss(mx.array(moved), target_tokens, masks, heads, grid, (1.0, 1.0), "mse")
    assert m1.item() == pytest.approx(l1.item(), rel=1e-6) and m0.item() != pytest.approx(l0.item())


def test_loss_definitions():
    d = np.array([-3.0, -0.5, 0.0, 0.2, 2.0], dtype=np.float32)
    smooth = np.array(elementwise_loss(mx.array(d), mx.zeros(5), "smooth_l1"))
    np.testing.assert_allclose(smooth, np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5))
    np.testing.assert_allclose(np.array(elementwise_loss(mx.array(d), mx.zeros(5), "mse")), d * d)
    with pytest.raises(ValueError, match="smooth_l1"):
        hierarchical_loss(mx.zeros((1, 1, 1, 2)), mx.zeros((1, 4, 2)), {}, [nn.Identity()], (2, 2), (1.0,), "l3")


def test_effective_rank():
    mx.random.seed(0)
    iso = mx.random.normal((4000, 32))
    assert 30.0 < effective_rank(iso) <= 32.0
    rank1 = mx.random.normal((1000, 1)) @ mx.random.normal((1, 32))
    assert effective_rank(rank1) == pytest.approx(1.0, abs=0.05)


def test_variance_covariance_terms():
    mx.random.seed(0)
    collapsed = mx.ones((64, 16))
    var, cov = variance_covariance(collapsed)
    assert var.item() == pytest.approx(1.0 - 0.01, abs=1e-3) and cov.item() == pytest.approx(0.0, abs=1e-6)
    white = mx.random.normal((4096, 16))
    var, cov = variance_covariance(white)
    assert var.item() < 0.05 and cov.item() < 0.05
    corr = mx.concatenate([white[:, :1]] * 16, axis=1)
    assert variance_covariance(corr)[1].item() > 10 * cov.item()


def test_batch_loss_is_the_mean_of_its_halves_loss():
    """Per-image normalisation: data-parallel ranks averaging their losses give the full-batch loss."""
    from mlx_hjepa.masks import MultiBlockMaskSampler

    grid = (14, 14)
    masks = MultiBlockMaskSampler(grid, num_hierarchies=3)(8, 0, 3)
    masks = {k: v for k, v in masks.items() if not k.endswith("_boxes")}
    assert len({float(v.sum()) for v in masks["win_valid_1"]}) > 1  # images differ in valid window counts
    rng = np.random.default_rng(5)
    tokens = rng.normal(size=(8, 196, 4)).astype(np.float32)
    preds = rng.normal(size=(8,) + masks["targets"].shape[1:] + (4,)).astype(np.float32)
    heads = [nn.Identity()] * 3

    def loss(rows):
        sub = {k: mx.array(v[rows]) for k, v in masks.items()}
        return hierarchical_loss(mx.array(preds[rows]), mx.array(tokens[rows]), sub, heads, grid, (1.0, 0.5, 0.25))[0]

    whole = loss(slice(0, 8)).item()
    halves = (loss(slice(0, 8, 2)).item() + loss(slice(1, 8, 2)).item()) / 2
    assert whole == pytest.approx(halves, rel=1e-6)


@pytest.mark.parametrize("definition,perfect_at_level1", [("mean_of_norm", True), ("norm_of_mean", False)])
def test_level_target_definitions(definition, perfect_at_level1):
    """mean_of_norm pools the layer-normed tokens, as the prediction side pools the predictor's
    tokens: predicting every level-0 target exactly then gives level 1 zero loss too (identity
    head). norm_of_mean layer-norms the pooled raw tokens, which differs from that pool."""
    grid = (4, 4)
    top, left, h, w = 0, 0, 4, 4
    targets = np.array([[[(top + i) * 4 + left + j for i in range(h) for j in range(w)]]], dtype=np.int32)
    windows = block_windows(np.array([[top]]), np.array([[left]]), h, w, grid, 1)
    masks = {k: mx.array(v) for k, v in {"targets": targets, **{f"{k}_1": v for k, v in windows.items()}}.items()}
    rng = np.random.default_rng(3)
    tokens = rng.normal(size=(1, 16, 8)).astype(np.float32) * rng.uniform(0.5, 3.0, size=(1, 16, 1)).astype(np.float32)
    perfect = level_targets(mx.array(tokens), masks, grid, 0)  # (1, 1, 16, D): every level-0 target
    _, (l0, l1) = hierarchical_loss(perfect, mx.array(tokens), masks, [nn.Identity()] * 2, grid, (1.0, 1.0), "mse",
                                    level_target=definition)
    assert l0.item() < 1e-10
    assert (l1.item() < 1e-10) == perfect_at_level1
    by_hand = hand_pool(np_layer_norm(tokens[0]).reshape(4, 4, 8), 2) if definition == "mean_of_norm" else \
        np_layer_norm(hand_pool(tokens[0].reshape(4, 4, 8), 2))
    got = np.array(level_targets(mx.array(tokens), masks, grid, 1, definition))[0, 0]
    np.testing.assert_allclose(got, by_hand.reshape(4, 8), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="mean_of_norm"):
        level_targets(mx.array(tokens), masks, grid, 1, "mean")

"""Multi-block mask rules (mlx_hjepa.masks), tested on their own. Pure numpy."""

import signal

import numpy as np
import pytest

from mlx_hjepa.masks import MultiBlockMaskSampler, block_windows, keep_random_subset


@pytest.fixture(autouse=True)
def no_hang():
    """Fail instead of hanging (the official collator loops forever on 6x6, min_keep=10)."""

    def expire(signum, frame):
        raise TimeoutError("mask sampling did not finish within 20 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def as_masks(indices, num_patches):
    """(..., K) patch indices -> (..., N) bool."""
    masks = np.zeros(indices.shape[:-1] + (num_patches,), dtype=bool)
    np.put_along_axis(masks, indices, True, axis=-1)
    return masks


def check_batch(sampler, masks, batch_size):
    """Invariants every batch must satisfy."""
    H, W = sampler.grid_size
    N = H * W
    context, targets, boxes = masks["context"], masks["targets"], masks["target_boxes"]
    assert context.dtype == targets.dtype == boxes.dtype == np.int32
    assert context.shape[0] == batch_size and context.shape[1] >= sampler.min_keep
    assert np.all(np.diff(context, axis=1) > 0), "context rows must be sorted, without repeats"
    assert context.min() >= 0 and context.max() < N
    # Targets are exact rectangles given by their boxes, one size per batch.
    top, left, h, w = (boxes[..., k] for k in range(4))
    assert np.all(h == h.flat[0]) and np.all(w == w.flat[0])
    h, w = int(h.flat[0]), int(w.flat[0])
    assert np.all(top >= 0) and np.all(top + h <= H) and np.all(left >= 0) and np.all(left + w <= W)
    rows = top[..., None, None] + np.arange(h)[:, None]
    cols = left[..., None, None] + np.arange(w)
    np.testing.assert_array_equal(targets, (rows * W + cols).reshape(batch_size, -1, h * w))
    # No context token lies in any target, and all lie in the context block.
    target_masks = as_masks(targets.reshape(batch_size, -1), N)
    context_masks = as_masks(context, N)
    assert not np.any(target_masks & context_masks)
    ctop, cleft, ch, cw = (masks["context_boxes"][:, k, None] for k in range(4))
    r, c = context // W, context % W
    assert np.all((r >= ctop) & (r < ctop + ch) & (c >= cleft) & (c < cleft + cw))


@pytest.mark.parametrize(
    "grid, kwargs",
    [
        (4, {}),
        (6, {}),  # min_keep=10 by default: the official collator never returns here
        (6, {"min_keep": 10, "max_attempts": 0}),  # every short draw takes the fallback
        (4, {"min_keep": 12}),  # only stacked targets leave 12 of 16 tokens
        (14, {}),
        ((5, 9), {}),
    ],
)
def test_sampling_terminates_and_keeps_invariants(grid, kwargs):
    sampler = MultiBlockMaskSampler(grid, **kwargs)
    for batch_index in range(40):
        check_batch(sampler, sampler(16, 0, batch_index), 16)


def test_fallback_context_is_whole_grid_and_meets_min_keep():
    # 16 - 12 = 4 = one 2x2 block: with 2x2 targets only stacking them all on one spot
    # leaves 12 tokens. With batch size 1 (and a bucket of 1 on 16 patches) Kc is the
    # image's exact context count.
    sampler = MultiBlockMaskSampler(4, min_keep=12, max_attempts=0)
    for batch_index in range(50):
        masks = sampler(1, 0, batch_index)
        covered = np.unique(masks["targets"])
        assert len(covered) <= 4
        np.testing.assert_array_equal(masks["context"][0], np.setdiff1d(np.arange(16), covered))
        np.testing.assert_array_equal(masks["context_boxes"][0], [0, 0, 4, 4])


def test_every_patch_can_be_covered_including_last_row_and_column():
    for grid in (6, 14, (5, 9)):
        sampler = MultiBlockMaskSampler(grid)
        H, W = sampler.grid_size
        target_seen = np.zeros(H * W, dtype=bool)
        context_seen = np.zeros(H * W, dtype=bool)
        for batch_index in range(100):
            masks = sampler(16, 1, batch_index)
            target_seen[masks["targets"].ravel()] = True
            context_seen[masks["context"].ravel()] = True
        assert target_seen.all(), f"{grid}: never targeted: {np.flatnonzero(~target_seen)}"
        assert context_seen.all(), f"{grid}: never in the context: {np.flatnonzero(~context_seen)}"


def rounding_admits(h, w, full_h, full_w, scale, aspect):
    """Whether (h, w) is consistent with some area and aspect in the ranges.

    h = round(sqrt(area * aspect)) is within 1/2 of sqrt(area * aspect) (unbounded
    above when clipped to the grid side, below when clipped to 1), likewise w, so
    (h - 1/2)(w - 1/2) <= area <= (h + 1/2)(w + 1/2) and
    (h - 1/2)/(w + 1/2) <= aspect <= (h + 1/2)/(w - 1/2): these intervals must meet
    the configured ones. This is the rounding tolerance.
    """
    u_low, u_high = (0.0 if h == 1 else h - 0.5), (np.inf if h == full_h else h + 0.5)
    v_low, v_high = (0.0 if w == 1 else w - 0.5), (np.inf if w == full_w else w + 0.5)
    area = full_h * full_w * np.asarray(scale)
    area_ok = u_low * v_low <= area[1] and u_high * v_high >= area[0]
    aspect_ok = u_low / v_high <= aspect[1] and (v_low == 0 or u_high / v_low >= aspect[0])
    return area_ok and aspect_ok


@pytest.mark.parametrize("grid", [14, 32, (10, 20)])
def test_block_scales_and_aspects_stay_in_range(grid):
    sampler = MultiBlockMaskSampler(grid)
    H, W = sampler.grid_size
    rng = np.random.default_rng(0)
    target_areas = []
    for _ in range(1000):
        (h, w), (ch, cw) = sampler.sample_block_sizes(rng)
        assert rounding_admits(h, w, H, W, sampler.target_scale, sampler.target_aspect), (h, w)
        assert rounding_admits(ch, cw, H, W, sampler.context_scale, sampler.context_aspect), (ch, cw)
        assert (h, w) in sampler.target_sizes and (ch, cw) in sampler.context_sizes
        target_areas.append(h * w / (H * W))
    # The whole scale range is used, not one end of it.
    low, high = sampler.target_scale
    assert min(target_areas) < low + 0.3 * (high - low) and max(target_areas) > high - 0.3 * (high - low)


def test_batch_block_sizes_are_possible_sizes():
    sampler = MultiBlockMaskSampler(14)
    for batch_index in range(200):
        masks = sampler(4, 0, batch_index)
        assert tuple(masks["target_boxes"][0, 0, 2:]) in sampler.target_sizes
        ch, cw = masks["context_boxes"][0, 2:]
        assert (ch, cw) in sampler.context_sizes or (ch, cw) == sampler.grid_size


def test_same_seed_epoch_batch_gives_same_masks():
    sampler = MultiBlockMaskSampler(14, seed=3)
    first, again = sampler(8, 2, 5), MultiBlockMaskSampler(14, seed=3)(8, 2, 5)
    assert first.keys() == again.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    for other in (MultiBlockMaskSampler(14, seed=4)(8, 2, 5), sampler(8, 3, 5), sampler(8, 2, 6)):
        assert not np.array_equal(first["target_boxes"], other["target_boxes"])


def test_few_shapes_over_1000_batches():
    sampler = MultiBlockMaskSampler(14)
    possible = set(sampler.possible_shapes())
    shapes, lengths = set(), set()
    for batch_index in range(1000):
        masks = sampler(32, 0, batch_index)
        kc, (h, w) = masks["context"].shape[1], masks["target_boxes"][0, 0, 2:]
        shapes.add((kc, int(h), int(w)))
        lengths.add((kc, masks["targets"].shape[2]))
    assert shapes <= possible
    # Kc takes at most 10 bucket values and (h, w) at most the 10 sizes the ranges
    # allow at 14x14: without buckets Kc alone takes dozens of values.
    assert len({kc for kc, _, _ in shapes}) <= 10
    assert len(lengths) <= 40 and len(shapes) <= 50


def test_window_count_depends_only_on_block_size():
    sampler = MultiBlockMaskSampler(14)
    by_size = {}
    for batch_index in range(300):
        masks = sampler(4, 0, batch_index)
        size = tuple(masks["target_boxes"][0, 0, 2:])
        counts = tuple(masks[f"win_idx_{level}"].shape[2] for level in (1, 2))
        assert by_size.setdefault(size, counts) == counts


def reference_windows(top, left, h, w, grid, level):
    """{window raster index: [positions in the block's targets row]} by brute force."""
    H, W = grid
    side = 2**level
    found = {}
    for i in range(-(-H // side)):
        for j in range(-(-W // side)):
            patches = [
                (r, c)
                for r in range(i * side, min((i + 1) * side, H))
                for c in range(j * side, min((j + 1) * side, W))
            ]
            if all(top <= r < top + h and left <= c < left + w for r, c in patches):
                found[i * -(-W // side) + j] = [(r - top) * w + (c - left) for r, c in patches]
    return found


def helper_windows(top, left, h, w, grid, level):
    out = block_windows(top, left, h, w, grid, level)
    found = {}
    for n in np.flatnonzero(out["win_valid"]):
        keep = out["pool_w"][n] > 0
        assert np.allclose(out["pool_w"][n][keep], 1 / keep.sum())
        found[int(out["win_idx"][n])] = sorted(out["pool_idx"][n][keep].tolist())
    padding = out["win_valid"] == 0
    assert np.all(out["win_idx"][padding] == 0) and np.all(out["pool_w"][padding] == 0)
    assert np.all(out["pool_idx"][padding] == 0)
    return found, len(out["win_valid"])


def test_windows_of_a_hand_built_box():
    # 8x8 grid, block rows 1..5, cols 1..4 (h=5, w=4), 2x2 windows (level 1, 4x4 grid).
    # Rows: window 0 (rows 0-1) crosses the top edge, 1 (2-3) and 2 (4-5) fit,
    # 3 (6-7) is outside. Columns: 0 (0-1) crosses, 1 (2-3) fits, 2 (4-5) crosses.
    found, slots = helper_windows(1, 1, 5, 4, (8, 8), 1)
    # Window (1, 1) = patches (2..3, 2..3) = block rows 1..2, cols 1..2.
    assert found == {5: [5, 6, 9, 10], 9: [13, 14, 17, 18]}
    assert slots == 4  # at left=0 or 2 a 4-wide block holds 2 window columns, times 2 rows
    assert found == reference_windows(1, 1, 5, 4, (8, 8), 1)


def test_partial_edge_windows_on_14x14():
    # Level 2: 4x4 windows, the last row and column of windows hold 2 patches per side.
    found, _ = helper_windows(8, 8, 6, 6, (14, 14), 2)
    assert sorted(found) == [10, 11, 14, 15]
    assert [len(found[k]) for k in (10, 11, 14, 15)] == [16, 8, 8, 4]
    assert found[15] == [28, 29, 34, 35]  # patches (12..13, 12..13) of a 6-wide block at 8
    # One row up, the bottom partial window no longer fits inside the block.
    found, _ = helper_windows(7, 8, 6, 6, (14, 14), 2)
    assert sorted(found) == [10, 11]


@pytest.mark.parametrize("grid", [(14, 14), (6, 6), (5, 9)])
def test_windows_match_brute_force_for_every_placement(grid):
    H, W = grid
    for h, w in [(1, 1), (2, 3), (3, 3), (5, 7), (H, W), (H - 1, 2)]:
        for level in (1, 2, 3):
            most = 0
            for top in range(H - h + 1):
                for left in range(W - w + 1):
                    found, slots = helper_windows(top, left, h, w, grid, level)
                    assert found == reference_windows(top, left, h, w, grid, level)
                    most = max(most, len(found))
            assert slots == max(1, most)


def test_sampler_windows_pool_the_right_patches():
    sampler = MultiBlockMaskSampler(14, num_hierarchies=4)
    masks = sampler(8, 0, 0)
    targets = masks["targets"]
    for level in (1, 2, 3):
        side = 2**level
        pool_idx, pool_w = masks[f"pool_idx_{level}"], masks[f"pool_w_{level}"]
        win_idx, valid = masks[f"win_idx_{level}"], masks[f"win_valid_{level}"]
        assert pool_idx.shape == pool_w.shape == win_idx.shape + (side * side,)
        assert pool_idx.dtype == win_idx.dtype == np.int32 and pool_w.dtype == valid.dtype == np.float32
        assert pool_idx.min() >= 0 and pool_idx.max() < targets.shape[2]
        np.testing.assert_allclose(pool_w.sum(-1), valid, atol=1e-6)  # 1 if valid, else 0
        # Each pooled patch lies in the window named by win_idx.
        patch = np.take_along_axis(targets[:, :, None, :], pool_idx, axis=-1)
        level_w = -(-14 // side)
        used = pool_w > 0
        assert np.all((patch // 14 // side == (win_idx // level_w)[..., None])[used])
        assert np.all((patch % 14 // side == (win_idx % level_w)[..., None])[used])
    assert "pool_idx_1" not in MultiBlockMaskSampler(14, num_hierarchies=1)(2, 0, 0)


def test_random_subset_is_uniform_over_positions():
    rng = np.random.default_rng(0)
    available = np.ones((4000, 64), dtype=bool)
    available[:, 5] = False
    kept = keep_random_subset(available, 16, rng)
    frequency = as_masks(kept, 64).mean(0)
    assert frequency[5] == 0
    np.testing.assert_allclose(np.delete(frequency, 5), 16 / 63, atol=0.04)


def test_context_truncation_is_not_biased_to_the_top():
    # Block placements are symmetric under a vertical flip, so the kept context tokens
    # must be too; keeping the first Kc tokens in raster order would favour the top.
    sampler = MultiBlockMaskSampler(14, seed=1)
    rows = np.concatenate([sampler(32, 0, b)["context"].ravel() // 14 for b in range(100)])
    assert abs(rows.mean() - 6.5) < 0.25
    assert abs(np.mean(rows < 7) - 0.5) < 0.03


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"grid_size": 0}, "grid_size"),
        ({"grid_size": (4, 4, 4)}, "grid_size"),
        ({"grid_size": 14, "num_targets": 0}, "num_targets"),
        ({"grid_size": 14, "target_scale": (0.3, 0.2)}, "target_scale"),
        ({"grid_size": 14, "context_scale": (0.85, 1.2)}, "context_scale"),
        ({"grid_size": 14, "target_aspect": (0.0, 1.0)}, "target_aspect"),
        ({"grid_size": 14, "context_aspect": 1.0}, "context_aspect"),
        ({"grid_size": 14, "min_keep": 0}, "min_keep"),
        ({"grid_size": 4, "min_keep": 13}, "cannot be met"),  # a 2x2 target leaves 12
        ({"grid_size": 14, "num_hierarchies": 0}, "num_hierarchies"),
        ({"grid_size": 14, "seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiBlockMaskSampler(**kwargs)


def test_bad_call_arguments_raise_clear_errors():
    sampler = MultiBlockMaskSampler(6)
    with pytest.raises(ValueError, match="batch_size"):
        sampler(0, 0, 0)
    with pytest.raises(ValueError, match="epoch"):
        sampler(2, -1, 0)

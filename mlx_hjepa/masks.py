"""I-JEPA multi-block masks with H-JEPA pooling windows, drawn in numpy in the loader.

Per batch: one target block size (h, w) and one context block size, each drawn from
a scale of the grid area and an aspect ratio h/w; per image: `num_targets` target
blocks and one context block placed uniformly at random; the context is the context
block minus every target. Each level l >= 1 of the hierarchy averages 2**l x 2**l
windows of the patch grid, and only windows lying wholly inside a target block count.

What this does better than the official collator (facebookresearch/ijepa
`src/masks/multiblock.py`):

- It always terminates. The official collator applies `min_keep` to the targets too
  and retries forever when a target block is smaller than that (a 6x6 grid with
  `min_keep=10`: target blocks hold at most 9 patches). Here `min_keep` bounds the
  context only (targets are exact rectangles), an image whose context comes out short
  is redrawn `max_attempts` times, then filled by a constructive fallback that cannot
  fail, and an impossible `min_keep` is a ValueError at construction.
- Blocks reach the last row and column: the official draws `top` from
  `randint(0, H - h)` (high exclusive) and forces h < H; here `top` is uniform over
  all of 0..H-h and h may equal H.
- The context never overlaps a target. The official, after 20 failed tries, drops the
  targets one by one from the region the context must avoid.
- Rows are cut to a common length by keeping a random subset of each image's context
  tokens, not the first ones in raster order (which biases the context to the top),
  and that length is rounded down to a few fixed buckets so a compiled step sees few
  shapes.
- Scale and aspect are drawn independently; the official reuses one uniform number
  for both, so its larger blocks are always its tallest ones.
"""

import itertools
import math

import numpy as np

from .rules import check_hierarchies


def block_size(grid_size, scale, aspect):
    """(h, w) of a block covering `scale` of the grid with aspect h/w, as I-JEPA
    rounds it (h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect))),
    clipped to 1..H and 1..W."""
    H, W = grid_size
    area = H * W * scale
    h = min(max(int(round(math.sqrt(area * aspect))), 1), H)
    w = min(max(int(round(math.sqrt(area / aspect))), 1), W)
    return h, w


def _size_reachable(h, w, grid_size, scale, aspect):
    """Whether block_size can return (h, w) for some scale and aspect in the ranges.

    In log space (A = log area, R = log aspect) the ranges are a rectangle and the
    rounding cell of (h, w) is a band in A + R and in A - R (2 log u and 2 log v),
    so the question is whether a bounded 2-D polygon is empty: it is not iff one
    of its candidate vertices (two constraint lines meeting) satisfies every
    constraint. Cells are closed, so this errs towards "reachable".
    """
    H, W = grid_size

    def rounding_band(k, full):  # 2 log u for u that rounds (and clips) to k
        low = -math.inf if k == 1 else 2 * math.log(k - 0.5)
        high = math.inf if k == full else 2 * math.log(k + 0.5)
        return low, high

    constraints = [  # low <= a * A + b * R <= high
        (1.0, 0.0, math.log(H * W * scale[0]), math.log(H * W * scale[1])),
        (0.0, 1.0, math.log(aspect[0]), math.log(aspect[1])),
        (1.0, 1.0, *rounding_band(h, H)),
        (1.0, -1.0, *rounding_band(w, W)),
    ]
    lines = [(a, b, c) for a, b, low, high in constraints for c in (low, high) if math.isfinite(c)]
    for (a1, b1, c1), (a2, b2, c2) in itertools.combinations(lines, 2):
        det = a1 * b2 - a2 * b1
        if det == 0:
            continue
        x, y = (c1 * b2 - c2 * b1) / det, (a1 * c2 - a2 * c1) / det
        if all(low - 1e-9 <= a * x + b * y <= high + 1e-9 for a, b, low, high in constraints):
            return True
    return False


def possible_block_sizes(grid_size, scale, aspect):
    """Every (h, w) that block_size can return for scale and aspect in the ranges."""
    H, W = grid_size
    return [
        (h, w)
        for h in range(1, H + 1)
        for w in range(1, W + 1)
        if _size_reachable(h, w, grid_size, scale, aspect)
    ]


def _axis_windows(start, length, full, side):
    """Along one axis, the level windows (side patches, the last one partial) that lie
    wholly inside [start, start + length). Returns, with n slots (the most any start
    in 0..full-length can hold, at least 1) and `side` patches per slot:
    window index (..., n), slot valid (..., n), patch offset from start (..., n, side),
    patch exists (..., n, side)."""
    num_windows = -(-full // side)
    slots = np.arange(-(-length // side) + 1)

    def windows(starts):
        first = np.asarray(-(-starts // side))  # first window starting at or after start
        index = first[..., None] + slots
        end = np.minimum((index + 1) * side, full)
        valid = (index < num_windows) & (end <= np.asarray(starts)[..., None] + length)
        return index, valid

    # Valid slots form a prefix, so the most windows over all starts sizes the output.
    _, valid_all = windows(np.arange(full - length + 1))
    n = max(1, int(valid_all.sum(-1).max()))
    index, valid = windows(np.asarray(start))
    index, valid = index[..., :n], valid[..., :n]
    patch = index[..., None] * side + np.arange(side)
    exists = valid[..., None] & (patch < full)
    return np.where(valid, index, 0), valid, patch - np.asarray(start)[..., None, None], exists


def block_windows(top, left, h, w, grid_size, level):
    """Level-`level` pooling windows of h x w blocks at (top, left) on an (H, W) grid.

    `top` and `left` are ints or int arrays of one shape S. Window (i, j) of side
    s = 2**level covers patch rows i*s..min((i+1)*s, H)-1 (likewise columns) and
    counts only if every one of its patches lies inside the block. Returns
    `pool_idx` int32 S + (n, s*s): positions of the window's patches in the block's
    raster order (padding 0); `pool_w` float32 S + (n, s*s): 1/count per patch, 0 for
    padding; `win_idx` int32 S + (n,): raster index in the ceil(H/s) x ceil(W/s) level
    grid (padding 0); `win_valid` float32 S + (n,). n depends only on (h, w, grid,
    level): the most windows any placement of the block can hold, at least 1.
    """
    H, W = grid_size
    side = 2**level
    win_row, row_valid, row_offset, row_exists = _axis_windows(top, h, H, side)
    win_col, col_valid, col_offset, col_exists = _axis_windows(left, w, W, side)
    valid = row_valid[..., :, None] & col_valid[..., None, :]  # S + (R, C)
    win_idx = np.where(valid, win_row[..., :, None] * -(-W // side) + win_col[..., None, :], 0)
    exists = (
        row_exists[..., :, None, :, None]
        & col_exists[..., None, :, None, :]
        & valid[..., None, None]
    )  # S + (R, C, s, s)
    position = row_offset[..., :, None, :, None] * w + col_offset[..., None, :, None, :]
    count = exists.sum((-2, -1), keepdims=True)
    shape = valid.shape[:-2] + (valid.shape[-2] * valid.shape[-1],)
    return {
        "pool_idx": np.where(exists, position, 0).reshape(shape + (side * side,)).astype(np.int32),
        "pool_w": (exists / np.maximum(count, 1)).reshape(shape + (side * side,)).astype(np.float32),
        "win_idx": win_idx.reshape(shape).astype(np.int32),
        "win_valid": valid.reshape(shape).astype(np.float32),
    }


def keep_random_subset(available, k, rng):
    """(B, N) bool -> (B, k) int32 sorted indices, a uniformly random k-subset of each
    row's True entries (every row needs at least k)."""
    if k > available.sum(1).min():
        raise ValueError(f"Cannot keep {k} tokens from a row that has {available.sum(1).min()}.")
    keys = rng.random(available.shape)
    keys[~available] = 2.0  # above every random key: never chosen
    return np.sort(np.argsort(keys, axis=1)[:, :k], axis=1).astype(np.int32)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_range(name, value, at_most_one):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}.") from None
    if not (0 < low <= high) or (at_most_one and high > 1):
        bound = " <= 1" if at_most_one else ""
        raise ValueError(f"{name} must satisfy 0 < low <= high{bound}, got {value!r}.")
    return low, high


class MultiBlockMaskSampler:
    """Draws I-JEPA multi-block masks for a batch: `sampler(batch_size, epoch, batch_index)`.

    Returns a dict of numpy arrays (B images, M = num_targets, Kt = h*w):
      context        int32 (B, Kc)  sorted patch indices (row * W + col) outside every target
      targets        int32 (B, M, Kt) each target block's patches, raster order in the block
      target_boxes   int32 (B, M, 4)  (top, left, h, w)
      context_boxes  int32 (B, 4)     the context block the context was cut from
      and per level l in 1..num_hierarchies-1 the block_windows arrays of every target
      block as pool_idx_l, pool_w_l (B, M, W_l, 4**l), win_idx_l, win_valid_l (B, M, W_l).

    Kc is the batch's smallest context count rounded down to a multiple of
    ceil(N/16) (never below min_keep); longer rows keep a random subset. An image whose
    context holds fewer than min_keep tokens is redrawn (positions only) up to
    max_attempts times; if still short, its context block becomes the whole grid and its
    targets are placed one at a time, each uniformly among the placements that leave at
    least min_keep context tokens. Putting a target on top of the first one always
    qualifies (the constructor checks N - h*w >= min_keep for every possible h*w), so
    this never fails.
    """

    def __init__(
        self,
        grid_size,
        num_targets=4,
        target_scale=(0.15, 0.2),
        target_aspect=(0.75, 1.5),
        context_scale=(0.85, 1.0),
        context_aspect=(1.0, 1.0),
        min_keep=10,
        num_hierarchies=3,
        seed=0,
        max_attempts=20,
    ):
        if isinstance(grid_size, (int, np.integer)) and not isinstance(grid_size, bool):
            grid_size = (grid_size, grid_size)
        try:
            H, W = (_check_int("grid_size", g, 1) for g in grid_size)
        except (TypeError, ValueError):
            raise ValueError(
                f"grid_size must be a positive int or a pair (H, W) of positive ints (patches), got {grid_size!r}."
            ) from None
        self.grid_size = (H, W)
        self.num_patches = H * W
        self.num_targets = _check_int("num_targets", num_targets, 1)
        self.target_scale = _check_range("target_scale", target_scale, at_most_one=True)
        self.target_aspect = _check_range("target_aspect", target_aspect, at_most_one=False)
        self.context_scale = _check_range("context_scale", context_scale, at_most_one=True)
        self.context_aspect = _check_range("context_aspect", context_aspect, at_most_one=False)
        self.min_keep = _check_int("min_keep", min_keep, 1)
        self.num_hierarchies = _check_int("num_hierarchies", num_hierarchies, 1)
        self.seed = _check_int("seed", seed, 0)
        self.max_attempts = _check_int("max_attempts", max_attempts, 0)

        self.target_sizes = possible_block_sizes(self.grid_size, self.target_scale, self.target_aspect)
        self.context_sizes = possible_block_sizes(self.grid_size, self.context_scale, self.context_aspect)
        largest = max(self.target_sizes, key=lambda hw: hw[0] * hw[1])
        if self.num_patches - largest[0] * largest[1] < self.min_keep:
            raise ValueError(
                f"min_keep={self.min_keep} cannot be met on a {H}x{W} grid: a {largest[0]}x{largest[1]} "
                f"target block leaves at most {self.num_patches - largest[0] * largest[1]} context tokens; "
                "lower min_keep or target_scale."
            )
        self.bucket = max(1, -(-self.num_patches // 16))

    def check_levels(self):
        """Raise ValueError unless every hierarchy level fits the grid and can find a pooling window
        wholly inside some target block (else that level's loss would always be empty)."""
        H, W = self.grid_size
        check_hierarchies(self.num_hierarchies, min(H, W))
        window = 2 ** (self.num_hierarchies - 1)
        side = max(min(hw) for hw in self.target_sizes)
        if side < window:
            raise ValueError(
                f"num_hierarchies={self.num_hierarchies} pools {window}x{window} windows at its coarsest level, but "
                f"target blocks are at most {side} patches on their shorter side (target_scale up to "
                f"{self.target_scale[1]} of a {H}x{W} grid), so that level would never have a window to predict; "
                "lower num_hierarchies or raise the target scale."
            )
        return self

    @classmethod
    def from_config(cls, masking, grid_size, num_hierarchies, seed=0):
        """From a config's `masking` section (anything with its attribute names)."""
        return cls(grid_size, num_targets=masking.num_target_masks, target_scale=tuple(masking.mask_scale),
                   target_aspect=tuple(masking.aspect_ratio), context_scale=tuple(masking.context_scale),
                   min_keep=masking.min_keep, num_hierarchies=num_hierarchies, seed=seed)

    def context_length(self, smallest_count):
        """The common context length Kc for a batch whose shortest context has this many tokens."""
        return max(self.min_keep, smallest_count // self.bucket * self.bucket)

    def possible_shapes(self):
        """Sorted (Kc, h, w) triples: a superset of every shape the sampler can emit."""
        shapes = []
        for h, w in self.target_sizes:
            most = self.num_patches - h * w  # the context misses at least one target block
            lengths = {self.context_length(c) for c in range(self.min_keep, most + 1)}
            shapes += [(kc, h, w) for kc in lengths]
        return sorted(shapes)

    def sample_block_sizes(self, rng):
        """One batch's ((h, w) of the targets, (h, w) of the context block)."""
        target = block_size(self.grid_size, rng.uniform(*self.target_scale), rng.uniform(*self.target_aspect))
        context = block_size(self.grid_size, rng.uniform(*self.context_scale), rng.uniform(*self.context_aspect))
        return target, context

    def _box_masks(self, corners, h, w):
        """(..., 2) top-left corners -> (..., H, W) bool masks of h x w boxes."""
        H, W = self.grid_size
        rows = np.arange(H) - corners[..., 0, None]
        cols = np.arange(W) - corners[..., 1, None]
        return ((rows >= 0) & (rows < h))[..., :, None] & ((cols >= 0) & (cols < w))[..., None, :]

    def _fallback(self, rng, h, w):
        """Targets for one image whose context is the whole grid, placed one at a time
        among the placements that keep min_keep context tokens."""
        available = np.ones(self.grid_size, dtype=bool)
        corners = []
        for _ in range(self.num_targets):
            integral = np.pad(available.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
            covered = integral[h:, w:] - integral[:-h, w:] - integral[h:, :-w] + integral[:-h, :-w]
            allowed = np.flatnonzero(available.sum() - covered >= self.min_keep)
            top, left = np.unravel_index(rng.choice(allowed), covered.shape)
            available[top : top + h, left : left + w] = False
            corners.append((top, left))
        return np.array(corners), available

    def __call__(self, batch_size, epoch, batch_index):
        B = _check_int("batch_size", batch_size, 1)
        rng = np.random.default_rng(
            [self.seed, _check_int("epoch", epoch, 0), _check_int("batch_index", batch_index, 0)]
        )
        H, W = self.grid_size
        M = self.num_targets
        (h, w), (ch, cw) = self.sample_block_sizes(rng)

        def draw(n):
            targets = rng.integers(0, [H - h + 1, W - w + 1], size=(n, M, 2))
            context = rng.integers(0, [H - ch + 1, W - cw + 1], size=(n, 2))
            available = self._box_masks(context, ch, cw) & ~self._box_masks(targets, h, w).any(1)
            return targets, context, available

        target_corners, context_corners, available = draw(B)
        context_sizes = np.tile([ch, cw], (B, 1))
        for _ in range(self.max_attempts):
            short = available.sum((1, 2)) < self.min_keep
            if not short.any():
                break
            target_corners[short], context_corners[short], available[short] = draw(int(short.sum()))
        for b in np.flatnonzero(available.sum((1, 2)) < self.min_keep):
            target_corners[b], available[b] = self._fallback(rng, h, w)
            context_corners[b], context_sizes[b] = (0, 0), (H, W)

        available = available.reshape(B, H * W)
        context = keep_random_subset(available, self.context_length(int(available.sum(1).min())), rng)
        tops, lefts = target_corners[..., 0], target_corners[..., 1]
        rows = tops[..., None, None] + np.arange(h)[:, None]
        cols = lefts[..., None, None] + np.arange(w)
        masks = {
            "context": context,
            "targets": (rows * W + cols).reshape(B, M, h * w).astype(np.int32),
            "target_boxes": np.concatenate(
                [target_corners, np.broadcast_to([h, w], (B, M, 2))], axis=-1
            ).astype(np.int32),
            "context_boxes": np.concatenate([context_corners, context_sizes], axis=-1).astype(np.int32),
        }
        for level in range(1, self.num_hierarchies):
            windows = block_windows(tops, lefts, h, w, self.grid_size, level)
            masks.update({f"{name}_{level}": array for name, array in windows.items()})
        return masks

"""Built-in synthetic data: ten classes of shapes and textures, generated from a seed.

The quickstart's data, needing no files. Each image is a textured background (a
colour gradient plus smooth noise), a few small distractor dots, and one foreground
figure whose *shape* is the class: disc, square, triangle, ring, cross, grating,
checkerboard, two discs, frame, bar. Position, size, rotation and every colour are
random and independent of the class, so global colour or brightness says nothing
about the label: a linear probe has to read structure, which pretrained features
carry and random-init features mostly do not.

Generation is vectorised numpy (about a second for 6,000 images at 64 px on one core).
"""

import functools
import math

import numpy as np

from .sources import ArrayDataset

CLASSES = ["disc", "square", "triangle", "ring", "cross", "grating", "checkerboard", "two_discs", "frame", "bar"]
DEFAULT_SIZES = {"train": 5000, "val": 1000}
_SPLIT_KEYS = {"train": 0, "val": 1}


def _shape_mask(label, u, v):
    """Foreground mask of class ``label`` on figure coordinates (u, v), radius 1 at the figure's edge."""
    rho = np.sqrt(u * u + v * v)
    box = np.maximum(np.abs(u), np.abs(v))
    if label == 0:
        return rho <= 1.0
    if label == 1:
        return box <= 0.85
    if label == 2:
        mask = np.ones_like(u, dtype=bool)
        for angle in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6):
            mask &= math.cos(angle) * u + math.sin(angle) * v <= 0.5
        return mask
    if label == 3:
        return (rho <= 1.0) & (rho >= 0.55)
    if label == 4:
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))
    if label == 5:
        return (rho <= 1.0) & (np.sin(u * 3 * math.pi) > 0)
    if label == 6:
        return (box <= 0.9) & ((np.floor(u * 2.5) + np.floor(v * 2.5)) % 2 == 0)
    if label == 7:
        return ((u - 0.55) ** 2 + v * v <= 0.16) | ((u + 0.55) ** 2 + v * v <= 0.16)
    if label == 8:
        return (box <= 1.0) & (box >= 0.6)
    return (np.abs(v) <= 0.22) & (np.abs(u) <= 1.2)


def _smooth_noise(rng, count, size, grid=4):
    """(count, size, size, 3) smooth noise in [-1, 1]: a random grid x grid field, bilinearly upsampled."""
    coarse = rng.uniform(-1, 1, size=(count, grid, grid, 3)).astype(np.float32)
    positions = np.linspace(0, grid - 1, size)
    low = np.minimum(positions.astype(int), grid - 2)
    frac = (positions - low).astype(np.float32)
    interp = np.zeros((size, grid), np.float32)
    interp[np.arange(size), low] = 1 - frac
    interp[np.arange(size), low + 1] = frac
    return np.einsum("hi,bijc,wj->bhwc", interp, coarse, interp, optimize=True)


def generate_images(labels, size, rng):
    """Draw one uint8 (size, size, 3) image per label."""
    count = len(labels)
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    ys, xs = axis[None, :, None], axis[None, None, :]

    def uniform(low, high, shape):
        return rng.uniform(low, high, shape).astype(np.float32)

    # Background: gradient between two random colours along a random direction, plus smooth noise.
    colour_a, colour_b = uniform(0, 255, (count, 1, 1, 3)), uniform(0, 255, (count, 1, 1, 3))
    direction = uniform(0, 2 * math.pi, (count, 1, 1))
    ramp = (np.cos(direction) * (xs - 0.5) + np.sin(direction) * (ys - 0.5) + 0.71) / 1.42
    background = colour_a + (colour_b - colour_a) * ramp[..., None]
    background += 40 * _smooth_noise(rng, count, size)
    background_mean = background[:, ::4, ::4].mean(axis=(1, 2), keepdims=True)
    np.clip(background, 0, 255, out=background)
    images = background.astype(np.uint8)

    # Distractor dots, the same for every class.
    for _ in range(3):
        cx, cy, radius = uniform(0, 1, (count, 1, 1)), uniform(0, 1, (count, 1, 1)), uniform(0.02, 0.06, (count, 1, 1))
        dots = ((xs - cx) ** 2 + (ys - cy) ** 2 <= radius ** 2)[..., None]
        np.copyto(images, rng.integers(0, 256, (count, 1, 1, 3), dtype=np.uint8), where=dots)

    # Foreground figure: class shape at a random place, size and rotation, in a colour
    # pushed away from the background's mean so the figure is visible.
    foreground = uniform(0, 255, (count, 1, 1, 3))
    too_close = np.linalg.norm(foreground - background_mean, axis=-1, keepdims=True) < 90
    foreground = np.where(too_close, 255 - background_mean, foreground).astype(np.uint8)
    cx, cy = uniform(0.3, 0.7, (count, 1, 1)), uniform(0.3, 0.7, (count, 1, 1))
    radius, angle = uniform(0.18, 0.3, (count, 1, 1)), uniform(0, 2 * math.pi, (count, 1, 1))
    dx, dy = (xs - cx) / radius, (ys - cy) / radius
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = np.cos(angle) * dy - np.sin(angle) * dx
    mask = np.zeros((count, size, size), bool)
    for label in range(len(CLASSES)):
        members = np.flatnonzero(labels == label)
        if len(members):
            mask[members] = _shape_mask(label, u[members], v[members])
    np.copyto(images, foreground, where=mask[..., None])
    return images


@functools.lru_cache(maxsize=4)  # train and eval in one process (the quickstart) generate once
def make_synthetic(split="train", num_samples=None, resolution=64, seed=0, chunk=512):
    """Return (images uint8 (N, R, R, 3), labels int32 (N,)) for ``split``; balanced labels, deterministic.

    The arrays are cached per arguments and read-only.
    """
    if split == "test":
        split = "val"
    if split not in _SPLIT_KEYS:
        raise ValueError(f"synthetic has splits ['train', 'val'], not {split!r}.")
    count = DEFAULT_SIZES[split] if num_samples is None else int(num_samples)
    if count <= 0 or int(resolution) < 8:
        raise ValueError(f"synthetic needs num_samples > 0 and resolution >= 8, got {count}, {resolution}.")
    rng = np.random.default_rng([seed, _SPLIT_KEYS[split], 0x5717])
    labels = rng.permutation(np.arange(count) % len(CLASSES)).astype(np.int32)
    images = np.empty((count, resolution, resolution, 3), np.uint8)
    for start in range(0, count, chunk):
        images[start:start + chunk] = generate_images(labels[start:start + chunk], int(resolution), rng)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


class SyntheticDataset(ArrayDataset):
    """The built-in synthetic dataset (see module docstring).

    Args:
        split: "train" (default 5,000 images) or "val" (1,000; "test" is an alias).
        num_samples: override the split's size.
        resolution: side of the generated images (the transform then crops/resizes to image_size).
        seed: generation seed; the same seed gives the same images and labels.
    """

    def __init__(self, split="train", num_samples=None, resolution=64, seed=0, transform=None, name="synthetic"):
        images, labels = make_synthetic(split, num_samples, resolution, seed)
        super().__init__(images, labels, CLASSES, name=name, transform=transform)
        self.split, self.seed = split, seed

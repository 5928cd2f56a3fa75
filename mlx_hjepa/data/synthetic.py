"""Built-in synthetic data: ten classes of shapes, generated from a seed.

The quickstart's data, needing no files. Each image is one large figure (radius 30-42%
of the image, near the centre) on a flat background; the figure's *shape* is the class:
disc, square, triangle, ring, cross, grating, checkerboard, two discs, frame, bar.
Position, size, rotation and both colours are random and independent of the class, so
global colour or brightness says nothing about the label. Colours are muted (hue varies
little), backgrounds are flat and the figure covers most of the image, so the masked
target blocks of a 6x6 patch grid land on the figure's structure and what varies
between images is mostly that structure: a short pretraining run learns it, while a
random-init encoder's pooled features (mostly the mean colour) stay near chance.

Generation is vectorised numpy (about a second of CPU time for 6,000 images at 64 px).
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


def _muted(colours, saturation=0.3):
    """Pull RGB colours towards their own grey: hue stays random but varies little."""
    grey = colours.mean(axis=-1, keepdims=True)
    return grey + saturation * (colours - grey)


def generate_images(labels, size, rng):
    """Draw one uint8 (size, size, 3) image per label."""
    count = len(labels)
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    ys, xs = axis[None, :, None], axis[None, None, :]

    def uniform(low, high, shape):
        return rng.uniform(low, high, shape).astype(np.float32)

    # A flat background and a large figure in a colour pushed away from it, both muted:
    # what varies between images is then mostly the figure's shape, place, size and angle.
    background = uniform(0, 255, (count, 1, 1, 3))
    foreground = uniform(0, 255, (count, 1, 1, 3))
    too_close = np.linalg.norm(foreground - background, axis=-1, keepdims=True) < 120
    foreground = np.where(too_close, 255 - background, foreground)
    background, foreground = _muted(background), _muted(foreground)

    cx, cy = uniform(0.4, 0.6, (count, 1, 1)), uniform(0.4, 0.6, (count, 1, 1))
    radius, angle = uniform(0.3, 0.42, (count, 1, 1)), uniform(0, 2 * math.pi, (count, 1, 1))
    dx, dy = (xs - cx) / radius, (ys - cy) / radius
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = np.cos(angle) * dy - np.sin(angle) * dx
    mask = np.zeros((count, size, size), bool)
    for label in range(len(CLASSES)):
        members = np.flatnonzero(labels == label)
        if len(members):
            mask[members] = _shape_mask(label, u[members], v[members])
    return np.where(mask[..., None], foreground, background).astype(np.uint8)


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

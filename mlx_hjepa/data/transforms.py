"""Image transforms for JEPA pretraining and evaluation, built on mlx-data buffers.

Pixels stay uint8 HWC. Random parameters are drawn in Python from a numpy generator
that the loader keys by (seed, epoch, position in the epoch), never from mlx-data's
random ops (its prefetch threads all replay one random sequence). The heavy pixel
work (decode, resize, centre crop) runs in mlx-data's native ops.

A transform exposes ``image_size`` and ``attach(buffer, rng_for)``, which appends its
ops to an mlx-data ``Buffer`` whose samples hold a decoded ``"image"``; ``rng_for(sample)``
returns that sample's generator. Calling a transform on one image,
``transform(image, seed=0)``, runs the same ops on a one-sample buffer.
"""

import math

import numpy as np
import mlx.data as dx

from ..rules import AUGMENTED_SPLITS, DEFAULT_IMAGE_SIZE, EVAL_CROP_FRACTION

IMAGE_KEY = "image"
JITTER_KEY = "jitter"


def random_resized_crop_params(rng, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Return (top, left, h, w) with torchvision's RandomResizedCrop semantics.

    Ten tries at an area fraction uniform in ``scale`` and an aspect ratio log-uniform in
    ``ratio``; if none fits, the largest centred crop whose aspect lies within ``ratio``.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


# Colour jitter as one affine map of RGB. Brightness, contrast, saturation and a hue
# rotation in YIQ space are all affine in RGB, so any order of them composes to
# x -> M x + t; clamping happens once at the end (torchvision clamps after each step).
_GREY = np.array([0.299, 0.587, 0.114], np.float64)
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def draw_jitter(rng, strength):
    """Draw (brightness, contrast, saturation, hue, order...) for colour jitter of ``strength``."""
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    factors = rng.uniform(low, high, size=3)
    hue = rng.uniform(-strength / 4, strength / 4)
    order = rng.permutation(4)
    return np.concatenate([factors, [hue], order]).astype(np.float32)


def jitter_affine(params, mean_rgb):
    """Compose the jitter drawn by ``draw_jitter`` into (M, t) for an image of mean ``mean_rgb``."""
    brightness, contrast, saturation, hue = (float(p) for p in params[:4])
    matrix, offset = np.eye(3), np.zeros(3)
    for op in params[4:].astype(int):
        if op == 0:
            step, shift = brightness * np.eye(3), np.zeros(3)
        elif op == 1:  # blend with the mean grey level of the image as it is at this step
            grey_mean = _GREY @ (matrix @ mean_rgb + offset)
            step, shift = contrast * np.eye(3), (1 - contrast) * grey_mean * np.ones(3)
        elif op == 2:
            step, shift = saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), _GREY), np.zeros(3)
        else:
            angle = 2 * math.pi * hue
            rotation = np.array(
                [[1, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]]
            )
            step, shift = _YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ, np.zeros(3)
        matrix, offset = step @ matrix, step @ offset + shift
    return matrix, offset


def apply_jitter(image, params):
    """Apply drawn jitter ``params`` to a uint8 HWC RGB image; returns a new C-contiguous uint8 image."""
    from PIL import Image

    mean_rgb = image[::4, ::4].reshape(-1, 3).mean(axis=0, dtype=np.float64)  # a subsample is plenty for a mean
    matrix, offset = jitter_affine(params, mean_rgb)
    # PIL's RGB->RGB matrix conversion applies the 3x4 affine map with rounding and clamping in C,
    # about 4x faster than the same float32 arithmetic in numpy.
    affine = tuple(np.concatenate([matrix, offset[:, None]], axis=1).ravel().tolist())
    return np.array(Image.fromarray(image).convert("RGB", matrix=affine))  # mlx-data needs writeable arrays


def _as_rgb(image):
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, :3]


class JEPATransform:
    """Training transform: random resized crop, optional horizontal flip and colour jitter.

    Args:
        image_size: output side in pixels (every sample comes out image_size x image_size x 3).
        crop_scale: area fraction range of the crop (I-JEPA uses (0.3, 1.0)).
        crop_ratio: aspect-ratio range, drawn log-uniformly.
        color_jitter: strength c: brightness, contrast and saturation factors in
            [1-c, 1+c], hue shift in [-c/4, c/4] of a turn, applied in random order. 0 = off.
        horizontal_flip: flip with probability 0.5.

    Images smaller than the crop target (CIFAR's 32 px in a 224 px mix) are resized up.
    """

    def __init__(self, image_size=224, crop_scale=(0.3, 1.0), crop_ratio=(3 / 4, 4 / 3), color_jitter=0.0,
                 horizontal_flip=False):
        crop_scale, crop_ratio = tuple(float(s) for s in crop_scale), tuple(float(r) for r in crop_ratio)
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}.")
        if not 0 < crop_ratio[0] <= crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {crop_ratio}.")
        if not 0 <= color_jitter <= 1:
            raise ValueError(f"color_jitter must lie in [0, 1], got {color_jitter}.")
        if int(image_size) <= 0:
            raise ValueError(f"image_size must be a positive integer, got {image_size}.")
        self.image_size = int(image_size)
        self.crop_scale, self.crop_ratio = crop_scale, crop_ratio
        self.color_jitter = float(color_jitter)
        self.horizontal_flip = bool(horizontal_flip)

    def __repr__(self):
        return (f"JEPATransform(image_size={self.image_size}, crop_scale={self.crop_scale}, "
                f"crop_ratio={self.crop_ratio}, color_jitter={self.color_jitter}, "
                f"horizontal_flip={self.horizontal_flip})")

    def _crop_and_flip(self, sample, rng):
        image = _as_rgb(sample[IMAGE_KEY])
        top, left, h, w = random_resized_crop_params(rng, image.shape[0], image.shape[1], self.crop_scale,
                                                     self.crop_ratio)
        crop = image[top:top + h, left:left + w]
        if self.horizontal_flip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        sample[IMAGE_KEY] = np.ascontiguousarray(crop)
        if self.color_jitter > 0:
            sample[JITTER_KEY] = draw_jitter(rng, self.color_jitter)
        return sample

    def attach(self, buffer, rng_for):
        buffer = buffer.sample_transform(lambda sample: self._crop_and_flip(sample, rng_for(sample)))
        buffer = buffer.image_resize(IMAGE_KEY, self.image_size, self.image_size)
        if self.color_jitter > 0:
            buffer = buffer.sample_transform(_jitter_sample)
        return buffer

    def __call__(self, image, seed=0):
        return _run_one(self, image, seed)


def _jitter_sample(sample):
    sample[IMAGE_KEY] = apply_jitter(sample[IMAGE_KEY], sample.pop(JITTER_KEY))
    return sample


class JEPAEvalTransform:
    """Evaluation transform: resize the shorter side to image_size / crop_fraction, then centre crop."""

    def __init__(self, image_size=224, crop_fraction=EVAL_CROP_FRACTION):
        if int(image_size) <= 0 or not 0 < crop_fraction <= 1:
            raise ValueError(f"need image_size > 0 and 0 < crop_fraction <= 1, got {image_size}, {crop_fraction}.")
        self.image_size = int(image_size)
        self.crop_fraction = float(crop_fraction)
        self.resize_size = int(self.image_size / self.crop_fraction)

    def __repr__(self):
        return f"JEPAEvalTransform(image_size={self.image_size}, crop_fraction={self.crop_fraction})"

    def attach(self, buffer, rng_for=None):
        buffer = buffer.sample_transform(_rgb_sample)
        buffer = buffer.image_resize_smallest_side(IMAGE_KEY, self.resize_size)
        return buffer.image_center_crop(IMAGE_KEY, self.image_size, self.image_size)

    def __call__(self, image, seed=0):
        return _run_one(self, image, seed)


def default_transform(split, image_size=DEFAULT_IMAGE_SIZE, crop_scale=(0.3, 1.0), color_jitter=0.0,
                      horizontal_flip=False):
    """JEPATransform for training splits (train, unlabeled, train+unlabeled), JEPAEvalTransform otherwise."""
    if split in AUGMENTED_SPLITS:
        return JEPATransform(image_size, crop_scale=crop_scale, color_jitter=color_jitter,
                             horizontal_flip=horizontal_flip)
    return JEPAEvalTransform(image_size)


def _rgb_sample(sample):
    image = sample[IMAGE_KEY]
    if image.ndim != 3 or image.shape[2] != 3:
        sample[IMAGE_KEY] = np.ascontiguousarray(_as_rgb(image))
    return sample


def _run_one(transform, image, seed):
    image = np.array(image, dtype=np.uint8, order="C")  # writeable, contiguous copy
    buffer = dx.buffer_from_vector([{IMAGE_KEY: image}])
    buffer = transform.attach(buffer, lambda sample: np.random.default_rng(seed))
    return buffer[0][IMAGE_KEY]

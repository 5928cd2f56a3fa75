"""The two floors every evaluation is quoted beside: the encoder at its random initialisation,
and the raw pixels.

Raw-pixel features are the images as the encoder sees them (eval transform at the
evaluation resolution, normalised with the ImageNet mean and std), flattened to
H * W * 3 numbers. They go through the same `extract_features` path (and cache) as an
encoder, so k-NN and the linear probe treat all three the same way. A recipe only
counts as learning on real images when it beats both.
"""

import mlx.core as mx
import mlx.nn as nn

from .features import extract_features, random_encoder_like
from .knn import knn_classify

NAMES = ("random_init", "raw_pixels")


class RawPixels(nn.Module):
    """Stands in for an encoder: one 'token' per image holding all its normalised pixels."""

    def __init__(self, img_size):
        super().__init__()
        self.img_size, self.depth = int(img_size), 1

    def config(self):
        return {"raw_pixels": self.img_size}

    def __call__(self, images):
        return images.reshape(images.shape[0], 1, -1)


def pixel_features(data, image_size, batch_size=256, cache_dir=None, num_workers=2, progress=None):
    """(features float32 (N, image_size**2 * 3), labels) of `data` at `image_size`: normalised, flattened pixels."""
    return extract_features(RawPixels(image_size), data, batch_size, 1, cache_dir=cache_dir,
                            num_workers=num_workers, progress=progress)


def baseline_features(name, encoder, data, seed=0, num_layers=1, batch_size=128, cache_dir=None, num_workers=2,
                      progress=None):
    """Features of baseline `name` (random_init: `encoder`'s shape freshly drawn from `seed`;
    raw_pixels: at `encoder.img_size`) for `data`."""
    if name == "random_init":
        return extract_features(random_encoder_like(encoder, seed), data, batch_size, num_layers,
                                cache_dir=cache_dir, num_workers=num_workers, progress=progress)
    if name == "raw_pixels":
        return pixel_features(data, encoder.img_size, batch_size, cache_dir, num_workers, progress)
    raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(NAMES)}.")


def pixel_knn(train_dataset, val_dataset, image_size, k=20, temperature=0.07, batch_size=256, num_workers=2):
    """k-NN accuracy (knn_classify's dict) of raw pixels from train_dataset to val_dataset."""
    train_x, train_y = pixel_features(train_dataset, image_size, batch_size, num_workers=num_workers)
    val_x, val_y = pixel_features(val_dataset, image_size, batch_size, num_workers=num_workers)
    mx.clear_cache()
    return knn_classify(train_x, train_y, val_x, val_y, k=k, temperature=temperature,
                        num_classes=getattr(train_dataset, "num_classes", None) or None)

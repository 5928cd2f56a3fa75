"""Frozen-encoder features for evaluation: load the encoder, pool its tokens, cache the result.

A feature is the average of the patch tokens after the encoder's final norm; with
num_layers=n it is the concatenation, over the last n blocks, of each block's output put
through the final norm and averaged (the last entry is the plain feature). Images go
through the eval transform (resize, centre crop) in order, one pass.

Features are cached as safetensors under a key hashed from the weights, the dataset
(kind, split, contents), the transform and num_layers, so k-NN and the linear probe, or a
second run of the command, extract them once.
"""

import hashlib
import json
import os
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ..data import JEPAEvalTransform, build_dataloader
from ..models import VisionTransformer, normalize_images
from ..rules import EVAL_CROP_FRACTION
from ..rundir import resolve_weights, training_config_of
from ..weights import load_encoder_file, read_safetensors, save_safetensors

WHICH = ("target", "context")


# ---------------------------------------------------------------- which weights

def load_eval_encoder(source, which="target"):
    """(encoder, weights file, training config or None) for `source`; `which` picks target or context."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got '{which}'.")
    path = resolve_weights(source)
    _, metadata = read_safetensors(path)
    exported_which = metadata.get("which")
    if "encoder_config" in metadata and exported_which and exported_which != which:
        raise ValueError(f"{path} holds the exported {exported_which} encoder, not the {which} encoder; "
                         f"pass a run directory or checkpoint to choose, or drop --which.")
    return load_encoder_file(path, which), path, training_config_of(path)


def training_seed(training_config, default=0):
    """The run's experiment.seed (the seed its encoder was initialised from), else `default`."""
    experiment = (training_config or {}).get("experiment") or {}
    return int(experiment.get("seed", (training_config or {}).get("seed", default)))


def training_crop_fraction(training_config, default=EVAL_CROP_FRACTION):
    """The run's evaluation.crop_fraction (the eval crop its own k-NN used), else `default`."""
    evaluation = (training_config or {}).get("evaluation") or {}
    return float(evaluation.get("crop_fraction", default))


def random_encoder_like(encoder, seed=0):
    """A freshly initialised encoder of the same shape, drawn after seeding MLX with `seed`."""
    mx.random.seed(seed)
    fresh = VisionTransformer(**encoder.config())
    mx.eval(fresh.parameters())
    return fresh


def with_image_size(encoder, image_size):
    """The same weights at another input size: the sin-cos position embedding is recomputed for the new grid."""
    if image_size is None or image_size == encoder.img_size:
        return encoder
    resized = VisionTransformer(**{**encoder.config(), "img_size": int(image_size)})
    resized.update(encoder.parameters())
    return resized


# ---------------------------------------------------------------- pooling

def pooled_features(encoder, images, num_layers=1):
    """(B, D * num_layers) mean-pooled features of normalised float images (B, H, W, 3)."""
    if num_layers == 1:
        return encoder(images).mean(axis=1)
    _, hidden = encoder(images, return_layers=num_layers)
    return mx.concatenate([encoder.norm(h).mean(axis=1) for h in hidden], axis=-1)


# ---------------------------------------------------------------- cache keys

def _digest(*parts):
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        # surrogateescape: file names that are not valid UTF-8 still hash (as their raw bytes)
        h.update(part if isinstance(part, (bytes, memoryview)) else str(part).encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


def weights_digest(encoder):
    """Hash of the encoder's configuration and every parameter's name, dtype, shape and bytes."""
    parts = [json.dumps(encoder.config(), sort_keys=True)]
    for name, value in sorted(tree_flatten(encoder.parameters())):
        array = np.array(value)
        parts += [name, array.dtype, array.shape, memoryview(np.ascontiguousarray(array)).cast("B")]
    return _digest(*parts)


def dataset_digest(dataset):
    """Hash of what a dataset holds: kind, name, split, root, labels, and its pixels or file list."""
    parts = [type(dataset).__name__, getattr(dataset, "name", ""), getattr(dataset, "split", ""),
             os.path.abspath(dataset.root) if getattr(dataset, "root", None) else "", len(dataset),
             np.ascontiguousarray(dataset.labels).tobytes()]
    if getattr(dataset, "images", None) is not None:
        parts.append(memoryview(np.ascontiguousarray(dataset.images)).cast("B"))
    for planes in getattr(dataset, "parts", []):
        parts.append(memoryview(np.ascontiguousarray(planes)).cast("B"))
    if getattr(dataset, "files", None) is not None:
        parts.append("\n".join(dataset.files))
    return _digest(*parts)


def cache_path(cache_dir, encoder, dataset, transform, num_layers):
    key = _digest(weights_digest(encoder), dataset_digest(dataset), repr(transform), num_layers)
    return Path(cache_dir) / f"features_{key}.safetensors"


# ---------------------------------------------------------------- extraction

def eval_transform_of(data, image_size):
    """The transform evaluation reads `data` through: the dataset's own when it is an eval transform
    (build_eval_datasets gives both splits the run's evaluation.crop_fraction), else the default
    JEPAEvalTransform at `image_size` (a training split's augmentation is never used for features)."""
    own = getattr(data, "transform", None)
    return own if isinstance(own, JEPAEvalTransform) else JEPAEvalTransform(image_size)


def _batches(data, batch_size, transform, num_workers):
    """(uint8 images, labels) batches from an ImageSource, an (images, labels) pair, or an iterable of batch dicts."""
    if isinstance(data, tuple):
        images, labels = data
        for start in range(0, len(labels), batch_size):
            yield np.asarray(images[start:start + batch_size]), np.asarray(labels[start:start + batch_size])
    elif hasattr(data, "labels") and hasattr(data, "read"):
        loader = build_dataloader(data, batch_size, num_workers=num_workers, shuffle=False, drop_last=False,
                                  transform=transform)
        for batch in loader:
            yield batch["image"], batch["label"]
    else:
        for batch in data:
            yield batch["image"], batch["label"]


def _num_samples(data):
    if isinstance(data, tuple):
        return len(data[1])
    return len(data) if hasattr(data, "labels") else None


def extract_features(encoder, data, batch_size=128, num_layers=1, transform=None, cache_dir=None,
                     num_workers=2, progress=None):
    """(features float32 (N, D * num_layers), labels int32 (N,)) of `data` under a frozen `encoder`.

    `data`: a dataset from `mlx_hjepa.data` (read in order through `transform`, by default the
    dataset's own JEPAEvalTransform, else JEPAEvalTransform at the encoder's image size), an (images uint8 (N, H, W, 3), labels) pair,
    or an iterable of {"image", "label"} batches. With `cache_dir`, a dataset's features are
    stored there and read back when the weights, dataset, transform and num_layers match.
    `progress`: an optional callable(done, total) called after each batch.
    """
    if not 1 <= num_layers <= encoder.depth:
        raise ValueError(f"num_layers must be between 1 and the encoder depth {encoder.depth}, got {num_layers}.")
    total = _num_samples(data)
    if total == 0:
        raise ValueError("The dataset split is empty; point --data-path at a dataset that has images in it.")
    transform = transform or eval_transform_of(data, encoder.img_size)
    cache_file = None
    if cache_dir is not None and hasattr(data, "labels"):
        cache_file = cache_path(cache_dir, encoder, data, transform, num_layers)
        if cache_file.is_file():
            cached = mx.load(str(cache_file))
            return np.array(cached["features"]), np.array(cached["labels"])

    features, labels, done = [], [], 0
    for images, batch_labels in _batches(data, batch_size, transform, num_workers):
        if images.shape[1:3] != (encoder.img_size, encoder.img_size):
            raise ValueError(f"Images are {images.shape[1]}x{images.shape[2]} but the encoder takes "
                             f"{encoder.img_size}x{encoder.img_size}; resize them or pass a matching image size.")
        pooled = pooled_features(encoder, normalize_images(mx.array(images)), num_layers)
        mx.eval(pooled)
        features.append(np.array(pooled, dtype=np.float32))
        labels.append(np.asarray(batch_labels, dtype=np.int32))
        done += len(batch_labels)
        if progress is not None:
            progress(done, total)
    if not features:
        raise ValueError("The dataset split is empty; point --data-path at a dataset that has images in it.")
    features, labels = np.concatenate(features), np.concatenate(labels)

    if cache_file is not None:
        save_safetensors(cache_file, {"features": mx.array(features), "labels": mx.array(labels)})
    return features, labels

"""Datasets by name, with their default transforms, and multi-dataset mixes from configs."""

import os

from .cifar import CIFARDataset
from .folder import ImageFolderDataset, ImageNet100Dataset, ImageNetDataset
from .idx import IDXDataset
from .mixing import WeightedMultiDataset, validate_weights
from .stl10 import STL10Dataset
from .synthetic import SyntheticDataset
from .transforms import JEPAEvalTransform, JEPATransform

DATASET_NAMES = ("imagenet", "imagenet100", "imagefolder", "cifar10", "cifar100", "stl10", "synthetic", "fashion_mnist", "mnist")
TRAIN_SPLITS = ("train", "unlabeled", "train+unlabeled")


def _open_dataset(name, data_path, split, **options):
    if name == "imagenet":
        return ImageNetDataset(data_path, split, **options)
    if name == "imagenet100":
        return ImageNet100Dataset(data_path, split, **options)
    if name == "imagefolder":
        return ImageFolderDataset(data_path, split, **options)
    if name in ("cifar10", "cifar100"):
        return CIFARDataset(data_path, split, name=name, **options)
    if name == "stl10":
        return STL10Dataset(data_path, split, **options)
    if name in ("fashion_mnist", "mnist"):
        return IDXDataset(data_path, split, name=name, **options)
    if name == "synthetic":
        return SyntheticDataset(split, **options)
    raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}.")


def default_transform(split, image_size=224, crop_scale=(0.3, 1.0), color_jitter=0.0, horizontal_flip=False):
    """JEPATransform for training splits (train, unlabeled, train+unlabeled), JEPAEvalTransform otherwise."""
    if split in TRAIN_SPLITS:
        return JEPATransform(image_size, crop_scale=crop_scale, color_jitter=color_jitter,
                             horizontal_flip=horizontal_flip)
    return JEPAEvalTransform(image_size)


def build_dataset(dataset_name, data_path="./data", split="train", image_size=224, crop_scale=(0.3, 1.0),
                  color_jitter=0.0, horizontal_flip=False, transform=None, **options):
    """Open dataset ``dataset_name`` with the transform its split calls for.

    ``dataset_name``: imagenet, imagenet100, imagefolder, cifar10, cifar100, stl10, synthetic, fashion_mnist, mnist.
    ``data_path``: the ImageNet root (holding train/ and val/), the folder holding the
    CIFAR/STL-10 archives or extracted folders, or ignored for synthetic.
    ``transform``: overrides the default (JEPATransform on training splits, else
    JEPAEvalTransform). Extra ``options`` go to the dataset: ``class_list`` (imagefolder),
    ``num_samples``, ``resolution`` (default: the transform's image size, within 64..128),
    ``seed`` (synthetic).
    """
    name = str(dataset_name).lower()
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {dataset_name!r}; valid names: {', '.join(DATASET_NAMES)}.")
    if transform is None:
        transform = default_transform(split, image_size, crop_scale, color_jitter, horizontal_flip)
    if name == "synthetic" and "resolution" not in options:
        # Draw near the size the model sees (kept within 64..128 px for detail and memory);
        # train and eval builds of one config then get the same images.
        options["resolution"] = min(max(getattr(transform, "image_size", image_size), 64), 128)
    return _open_dataset(name, os.fspath(data_path), split, transform=transform, **options)


def build_multi_dataset(dataset_configs, data_path="./data", split="train", sampling_strategy="weighted",
                        image_size=224, samples_per_epoch=None, crop_scale=(0.3, 1.0), color_jitter=0.0,
                        horizontal_flip=False, transform=None):
    """A ``WeightedMultiDataset`` from configs ``[{"name", "weight", "path", "split", ...options}]``.

    ``path`` defaults to ``data_path`` and ``split`` to ``split``; ``weight`` defaults to 1.
    Every dataset shares one transform so all samples end at ``image_size``.
    """
    if not dataset_configs:
        raise ValueError("dataset_configs is empty; list at least one {name, weight, path}.")
    if transform is None:
        transform = default_transform(split, image_size, crop_scale, color_jitter, horizontal_flip)
    configs = [dict(config) for config in dataset_configs]
    for config in configs:
        if "name" not in config:
            raise ValueError(f"dataset config {config} has no 'name'; valid names: {', '.join(DATASET_NAMES)}.")
    weights = validate_weights([config.pop("weight", 1.0) for config in configs], len(configs))  # before any I/O
    datasets = []
    for config in configs:
        name = config.pop("name")
        path = config.pop("path", data_path)
        datasets.append(build_dataset(name, path, config.pop("split", split), transform=transform, **config))
    return WeightedMultiDataset(datasets, weights, sampling_strategy, samples_per_epoch, transform=transform)

"""Datasets by name, with their default transforms, multi-dataset mixes, and the training and
evaluation datasets a run's config describes."""

import os

from ..rules import DATASET_NAMES, EVAL_SPLITS, FOLDER_DATASETS, pretrain_split
from .loader import build_dataloader

from .cifar import CIFARDataset
from .download import ARCHIVES, dataset_is_present, download_dataset, not_downloadable
from .folder import ImageFolderDataset, ImageNet100Dataset, ImageNetDataset
from .idx import IDXDataset
from .mixing import WeightedMultiDataset, validate_weights
from .stl10 import STL10Dataset
from .synthetic import SyntheticDataset
from .transforms import JEPAEvalTransform, JEPATransform, default_transform


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


def _download_if_missing(name, data_path):
    if name in ARCHIVES:
        if not dataset_is_present(name, data_path):
            download_dataset(name, data_path)
    elif name in FOLDER_DATASETS:
        raise ValueError(not_downloadable(name, data_path))


def build_dataset(dataset_name, data_path="./data", split="train", image_size=224, crop_scale=(0.3, 1.0),
                  color_jitter=0.0, horizontal_flip=False, transform=None, download=False, **options):
    """Open dataset ``dataset_name`` with the transform its split calls for.

    ``dataset_name``: imagenet, imagenet100, imagefolder, cifar10, cifar100, stl10, synthetic, fashion_mnist, mnist.
    ``data_path``: the ImageNet root (holding train/ and val/), the folder holding the
    CIFAR/STL-10 archives or extracted folders, or ignored for synthetic.
    ``transform``: overrides the default (JEPATransform on training splits, else
    JEPAEvalTransform). ``download=True`` fetches CIFAR-10/100 and STL-10 when they are not
    under ``data_path`` (ImageNet cannot be downloaded: the error says how to get it). Extra
    ``options`` go to the dataset: ``class_list`` (imagenet, imagenet100, imagefolder),
    ``num_samples``, ``resolution`` (default: the transform's image size, within 64..128),
    ``seed`` (synthetic).
    """
    name = str(dataset_name).lower()
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {dataset_name!r}; valid names: {', '.join(DATASET_NAMES)}.")
    if options.get("class_list") is not None and name not in FOLDER_DATASETS:
        raise ValueError(f"{name} has a fixed set of classes; class_list applies to {', '.join(FOLDER_DATASETS)}.")
    if options.get("class_list") is None:
        options.pop("class_list", None)
    if download:
        _download_if_missing(name, os.fspath(data_path))
    if transform is None:
        transform = default_transform(split, image_size, crop_scale, color_jitter, horizontal_flip)
    if name == "synthetic" and "resolution" not in options:
        # Draw near the size the model sees (kept within 64..128 px for detail and memory);
        # train and eval builds of one config then get the same images.
        options["resolution"] = min(max(getattr(transform, "image_size", image_size), 64), 128)
    return _open_dataset(name, os.fspath(data_path), split, transform=transform, **options)


def build_multi_dataset(dataset_configs, data_path="./data", split=None, sampling_strategy="weighted",
                        image_size=224, samples_per_epoch=None, crop_scale=(0.3, 1.0), color_jitter=0.0,
                        horizontal_flip=False, transform=None, weight_schedule=None):
    """A ``WeightedMultiDataset`` from configs ``[{"name", "weight", "path", "split", ...options}]``.

    ``path`` defaults to ``data_path``; ``split`` to ``split``, or with ``split=None`` to each
    dataset's pretraining split (STL-10: train+unlabeled); ``weight`` defaults to 1.
    Every dataset shares one transform so all samples end at ``image_size``.
    """
    if not dataset_configs:
        raise ValueError("dataset_configs is empty; list at least one {name, weight, path}.")
    if transform is None:
        transform = default_transform(split or "train", image_size, crop_scale, color_jitter, horizontal_flip)
    configs = [dict(config) for config in dataset_configs]
    for config in configs:
        if "name" not in config:
            raise ValueError(f"dataset config {config} has no 'name'; valid names: {', '.join(DATASET_NAMES)}.")
    weights = validate_weights([config.pop("weight", 1.0) for config in configs], len(configs))  # before any I/O
    datasets = []
    for config in configs:
        name = config.pop("name")
        path = config.pop("path", data_path)
        entry_split = config.pop("split", None) or split or pretrain_split(name)
        datasets.append(build_dataset(name, path, entry_split, transform=transform, **config))
    return WeightedMultiDataset(datasets, weights, sampling_strategy, samples_per_epoch, transform=transform,
                                weight_schedule=weight_schedule)


# ---------------------------------------------------------------- from a run's config

def source_options(cfg, name):
    """Synthetic data is drawn from experiment.seed; files need no options."""
    return {"seed": cfg.experiment.seed} if name == "synthetic" else {}


def build_train_dataset(cfg):
    """The training stream's dataset (one source or a mix) with the config's augmentations; each
    source reads its configured split, by default its pretraining split (STL-10: train+unlabeled)."""
    d, t = cfg.data, cfg.data.transforms
    transform = JEPATransform(d.image_size, crop_scale=tuple(t.crop_scale), color_jitter=t.color_jitter,
                              horizontal_flip=t.horizontal_flip)
    if d.use_multi_dataset:
        entries = [{"name": e.name, "weight": e.weight, "path": e.path or d.data_path, "split": e.split,
                    "class_list": e.class_list, **source_options(cfg, e.name)} for e in d.datasets]
        schedule = {change.from_epoch: change.weights for change in d.weight_schedule}
        return build_multi_dataset(entries, data_path=d.data_path, split=None, sampling_strategy=d.sampling_strategy,
                                   samples_per_epoch=d.samples_per_epoch, transform=transform,
                                   weight_schedule=schedule)
    dataset = build_dataset(d.dataset, data_path=d.data_path, split=d.split or pretrain_split(d.dataset),
                            transform=transform, class_list=d.class_list, **source_options(cfg, d.dataset))
    if d.samples_per_epoch is not None:  # a fresh random subset of the one dataset every epoch
        dataset = WeightedMultiDataset([dataset], [1.0], "balanced", d.samples_per_epoch, transform=dataset.transform,
                                       name=dataset.name)
    return dataset


def build_train_loader(cfg, world_size=1, rank=0):
    """(dataset, loader) of the training stream: this rank's shard of every epoch, full batches only."""
    dataset = build_train_dataset(cfg)
    return dataset, build_dataloader(dataset, cfg.data.batch_size, num_workers=cfg.data.num_workers, shuffle=True,
                                     drop_last=True, seed=cfg.experiment.seed, world_size=world_size, rank=rank)


def eval_source(cfg):
    """(dataset name, path) the in-run evaluation uses: the dataset, or the first one of a mix."""
    d = cfg.data
    if d.use_multi_dataset:
        return d.datasets[0].name, d.datasets[0].path or d.data_path
    return d.dataset, d.data_path


def eval_class_list(cfg):
    """The class list of the evaluation source (the dataset, or the first one of a mix), or None."""
    d = cfg.data
    return d.datasets[0].class_list if d.use_multi_dataset else d.class_list


def build_eval_datasets(cfg, dataset=None, data_path=None, split=None):
    """Labelled (bank, query) splits of the run's evaluation source, both through the eval transform.
    Evaluation always reads the labelled splits (STL-10: train and test), with the run's class list.
    `dataset`, `data_path` and `split` (the query split) override the run's (the report takes them)."""
    name, path = eval_source(cfg)
    if dataset is not None and dataset != name:  # another dataset: the run's class list is not its
        name, class_list = dataset, None
    else:
        class_list = eval_class_list(cfg)
    if name not in EVAL_SPLITS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(EVAL_SPLITS))}.")
    train_split, val_split = EVAL_SPLITS[name]
    path = data_path or path
    transform = JEPAEvalTransform(cfg.data.image_size, cfg.evaluation.crop_fraction)
    options = dict(source_options(cfg, name), class_list=class_list)
    return (build_dataset(name, data_path=path, split=train_split, transform=transform, **options),
            build_dataset(name, data_path=path, split=split or val_split, transform=transform, **options))

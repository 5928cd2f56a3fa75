"""Everything the report reads from a run and from the project's builders, in one place.

The run directory, the config -> data / masks builders and the image normalisation are
moving (RunDir, HJEPA.from_config, rules.py); only this module follows them.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx
import numpy as np

from .. import config as C


@dataclass
class Run:
    path: Path
    cfg: C.Config
    encoder: object  # the trained target encoder
    weights: Path  # the file it was read from
    metrics: list = field(default_factory=list)  # metrics.jsonl, one dict per line
    evals: dict = field(default_factory=dict)  # file name -> contents of eval*.json
    launch: dict = field(default_factory=dict)  # run.json
    feature_cache: Path = None  # where `python -m mlx_hjepa.eval RUN_DIR` caches features: shared with it


def open_run(run_dir):
    """The one place the report reads a run directory (config.yaml, weights, metrics, eval results)."""
    from ..eval.features import load_eval_encoder

    path = Path(run_dir)
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(f"{path} has no config.yaml; pass a run directory written by mlx_hjepa.train.")
    cfg = C.load_config(path / "config.yaml")
    encoder, weights, _ = load_eval_encoder(path, "target")
    metrics_file = path / "metrics.jsonl"
    metrics = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()] \
        if metrics_file.is_file() else []
    evals = {f.name: json.loads(f.read_text()) for f in sorted(path.glob("eval*.json"))}
    launch = json.loads((path / "run.json").read_text()) if (path / "run.json").is_file() else {}
    return Run(path, cfg, encoder, weights, metrics, evals, launch, path / "feature_cache")


def builders():
    """The config -> model / masks / data builders (today in train/, which the report must not otherwise use)."""
    from ..train import builders as b

    return b


def mask_sampler(cfg):
    grid = C.grid_size(cfg)
    shape = SimpleNamespace(grid_size=(grid, grid), num_hierarchies=cfg.model.num_hierarchies)
    return builders().build_mask_sampler(cfg, shape)


def normalize(images_uint8):
    """uint8 (B, H, W, 3) -> the float input the encoders were trained on."""
    from ..export import IMAGENET_MEAN, IMAGENET_STD

    x = mx.array(np.asarray(images_uint8)).astype(mx.float32) / 255.0
    return (x - mx.array(IMAGENET_MEAN)) / mx.array(IMAGENET_STD)


def random_init_like(encoder, cfg):
    """The encoder as the run initialised it (same seed), before any training."""
    from ..eval.features import random_encoder_like

    return random_encoder_like(encoder, cfg.experiment.seed)


def first_training_batch(cfg, dataset, sampler, count, epoch=0):
    """The first `count` images of the run's first batch of `epoch` (its own crops) and their masks."""
    from ..data import build_dataloader

    count = min(count, cfg.data.batch_size)
    loader = build_dataloader(dataset, count, num_workers=0, shuffle=True, drop_last=True, seed=cfg.experiment.seed)
    batches = loader.epoch_iter(epoch, 0)
    try:
        images = next(batches)["image"]
    finally:
        batches.close()
    masks = sampler(cfg.data.batch_size, epoch, 0)  # the whole batch's draw: context length is batch-wide
    return images, {name: array[:count] for name, array in masks.items()}


def training_sample(cfg, count):
    """(images, masks) of the run's first step, from the config alone."""
    return first_training_batch(cfg, builders().build_train_dataset(cfg), mask_sampler(cfg), count)


def eval_datasets(cfg, dataset=None, data_path=None, split=None):
    """(train bank, query split) through the eval transform: the run's k-NN data unless overridden."""
    b = builders()
    if dataset is None and data_path is None and split is None:
        return b.build_eval_datasets(cfg)
    from ..data import JEPAEvalTransform, build_dataset

    name, path = b.eval_source(cfg)
    name, path = dataset or name, data_path or path
    if name not in b.EVAL_SPLITS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(b.EVAL_SPLITS))}.")
    train_split, val_split = b.EVAL_SPLITS[name]
    transform = JEPAEvalTransform(cfg.data.image_size)
    options = b.source_options(cfg, name)
    return (build_dataset(name, data_path=path, split=train_split, transform=transform, **options),
            build_dataset(name, data_path=path, split=split or val_split, transform=transform, **options))

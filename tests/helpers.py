"""Tiny models and batches shared by the tests."""

import mlx.core as mx
import numpy as np

from mlx_hjepa.masks import MultiBlockMaskSampler
from mlx_hjepa.models import HJEPA
from mlx_hjepa.train.schedules import Schedules
from mlx_hjepa.train.step import StepOptions, TrainStep

TINY = dict(img_size=48, patch_size=8, embed_dim=64, depth=2, num_heads=2)


def hjepa(num_hierarchies=2, seed=0, predictor_dim=32, predictor_depth=1, predictor_heads=2, **encoder):
    """A model through the one production factory, HJEPA.from_config."""
    config = {"encoder": dict(mlp_ratio=4.0, **encoder),
              "predictor": dict(embed_dim=predictor_dim, depth=predictor_depth, num_heads=predictor_heads, mlp_ratio=4.0),
              "num_hierarchies": num_hierarchies}
    return HJEPA.from_config(config, seed=seed)


def tiny_hjepa(num_hierarchies=2, seed=0, **overrides):
    return hjepa(num_hierarchies, seed, **{**TINY, **overrides})


def tiny_schedules(total_steps=50, **overrides):
    kwargs = dict(lr=1e-3, warmup_lr=1e-4, min_lr=1e-5, warmup_steps=5, total_steps=total_steps,
                  weight_decay=0.04, weight_decay_end=0.4, ema_start=0.996, ema_end=1.0, ema_steps=total_steps)
    kwargs.update(overrides)
    return Schedules(**kwargs)


def tiny_batch(model, batch_size=8, seed=0, batch_index=0, min_keep=4):
    rng = np.random.default_rng(seed)
    size = model.encoder.img_size
    images = rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    sampler = MultiBlockMaskSampler(model.grid_size, min_keep=min_keep, num_hierarchies=model.num_hierarchies,
                                    seed=seed)
    return images, sampler(batch_size, 0, batch_index)


def tiny_step(model, schedules=None, **options):
    weights = options.pop("hierarchy_weights", (1.0, 0.5, 0.25, 0.125)[: model.num_hierarchies])
    return TrainStep(model, schedules or tiny_schedules(), StepOptions(hierarchy_weights=weights, **options))

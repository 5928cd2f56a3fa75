"""Patch 2 and 4: fine patch grids on small images (28-32 px), from the config to a training step."""

import mlx_hjepa  # noqa: F401  (preloads BLAS before mlx.core)
import mlx.core as mx
import numpy as np
import pytest

from mlx_hjepa.config import ConfigError, grid_size, load_config
from mlx_hjepa.models import VisionTransformer

from helpers import tiny_batch, tiny_hjepa, tiny_step

BASE = {"data": {"dataset": "fashion_mnist", "image_size": 28},
        "model": {"encoder_type": "vit_tiny", "depth": 2, "num_hierarchies": 2},
        "loss": {"hierarchy_weights": [1.0, 0.5]}}


@pytest.mark.parametrize("patch, image, grid", [(4, 28, 7), (4, 32, 8), (2, 16, 8), (2, 28, 14)])
def test_config_accepts_small_patches(patch, image, grid):
    cfg = load_config({**BASE, "data": {**BASE["data"], "image_size": image},
                       "model": {**BASE["model"], "patch_size": patch}})
    assert grid_size(cfg) == grid


def test_config_still_refuses_unsupported_patches_and_names_the_choices():
    with pytest.raises(ConfigError, match=r"Patch size 3 .*2, 4, 8, 14, 16"):
        load_config({**BASE, "model": {**BASE["model"], "patch_size": 3}})
    with pytest.raises(ConfigError, match="not divisible by the patch size 4"):
        load_config({**BASE, "data": {**BASE["data"], "image_size": 30}, "model": {**BASE["model"], "patch_size": 4}})


@pytest.mark.parametrize("patch", [2, 4])
def test_encoder_tokens_follow_the_patch_grid(patch):
    mx.random.seed(0)
    encoder = VisionTransformer(img_size=16, patch_size=patch, embed_dim=32, depth=1, num_heads=2)
    tokens = encoder(mx.zeros((2, 16, 16, 3)))
    assert encoder.grid_size == (16 // patch, 16 // patch) and tokens.shape == (2, (16 // patch) ** 2, 32)
    # each token sees only its own patch: changing one pixel of patch (0, 0) changes token 0's embedding only
    images = np.zeros((1, 16, 16, 3), np.float32)
    images[0, 0, 0] = 1.0
    embedded = encoder.patch_embed(mx.array(images)) - encoder.patch_embed(mx.zeros((1, 16, 16, 3)))
    moved = np.abs(np.array(embedded)).reshape(-1, 32).sum(axis=1) > 0
    assert moved[0] and not moved[1:].any()


@pytest.mark.parametrize("patch, image, levels", [(4, 28, 2), (4, 32, 3), (2, 16, 3)])
def test_training_step_runs_and_learns_on_small_patch_grids(patch, image, levels):
    model = tiny_hjepa(num_hierarchies=levels, img_size=image, patch_size=patch)
    step = tiny_step(model)
    images, masks = tiny_batch(model, batch_size=4)
    losses = [float(step(images, masks)["loss"]) for _ in range(6)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]

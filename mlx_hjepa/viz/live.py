"""Images written during training (`logging.log_images`, `logging.log_attention`), on rank 0, between epochs.

They go to RUN_DIR/images/ and, when a TensorBoard writer is given, to TensorBoard as images.
"""

import io
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..data import build_dataloader
from ..models import normalize_images
from . import analysis, overlays

NUM_IMAGES = 8
NUM_ATTENTION_IMAGES = 2


def first_training_batch(cfg, dataset, sampler, count, epoch=0):
    """The first `count` images of the run's first batch of `epoch` (its own crops) and their masks."""
    count = min(count, cfg.data.batch_size)
    loader = build_dataloader(dataset, count, num_workers=0, shuffle=True, drop_last=True, seed=cfg.experiment.seed)
    batches = loader.epoch_iter(epoch, 0)
    try:
        images = next(batches)["image"]
    finally:
        batches.close()
    masks = sampler(cfg.data.batch_size, epoch, 0)  # the whole batch's draw: context length is batch-wide
    return images, {name: array[:count] for name, array in masks.items()}


def _emit(picture, path, tag, step, tensorboard):
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    if tensorboard is not None:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        tensorboard.image(step, tag, buffer.getvalue(), picture.height, picture.width)
    return path


def write_mask_images(images, masks, grid, patch, path, step=0, tensorboard=None):
    """The masks grid (section 1 of the report) for uint8 images (B, H, W, 3) and their masks."""
    picture, _ = overlays.masks_grid(images, masks, grid, patch)
    return _emit(picture, Path(path), "images/masks", step, tensorboard)


def write_attention_images(encoder, images, attention_path, features_path, step=0, tensorboard=None):
    """Last-block attention per head (section 2) and the PCA feature map (section 3) of `encoder`."""
    x = normalize_images(mx.array(np.asarray(images)))
    queries = overlays.query_patches(encoder.grid_size)
    attention = analysis.last_block_attention(encoder, x[:NUM_ATTENTION_IMAGES])
    picture = overlays.attention_figure(images[:NUM_ATTENTION_IMAGES], attention, encoder.grid_size,
                                        encoder.patch_size, queries)
    written = [_emit(picture, Path(attention_path), "images/attention", step, tensorboard)]
    maps = {"trained": analysis.pca_rgb(analysis.patch_features(encoder, x), encoder.grid_size)}
    written.append(_emit(overlays.features_figure(images, maps), Path(features_path), "images/features", step,
                         tensorboard))
    return written


class ImageLogger:
    """Called by the trainer after each epoch; writes when the epoch is due and returns the seconds it took
    (the trainer leaves them out of img/s). `epoch` counts the epochs done (1 after the first)."""

    def __init__(self, cfg, run_dir, dataset, sampler, tensorboard=None):
        self.cfg, self.dir, self.tensorboard = cfg, Path(run_dir) / "images", tensorboard
        self.dataset, self.sampler = dataset, sampler
        every = cfg.logging.image_frequency or cfg.checkpoint.save_frequency
        self.every, self.epochs = every, cfg.training.epochs
        self._images = None

    def due(self, epoch):
        return epoch % self.every == 0 or epoch == self.epochs

    def __call__(self, epoch, step, model):
        if not self.due(epoch):
            return 0.0
        start = time.perf_counter()
        if self.cfg.logging.log_images:  # the images and masks of the first step of the epoch just trained
            images, masks = first_training_batch(self.cfg, self.dataset, self.sampler, NUM_IMAGES, epoch - 1)
            write_mask_images(images, masks, model.grid_size, model.encoder.patch_size,
                              self.dir / f"masks_epoch{epoch:04d}.png", step, self.tensorboard)
        if self.cfg.logging.log_attention:
            if self._images is None:  # the same images every time, to compare epochs
                self._images, _ = first_training_batch(self.cfg, self.dataset, self.sampler, NUM_IMAGES)
            write_attention_images(model.target_encoder, np.asarray(self._images),
                                   self.dir / f"attention_epoch{epoch:04d}.png",
                                   self.dir / f"features_epoch{epoch:04d}.png", step, self.tensorboard)
        return time.perf_counter() - start


def image_logger(cfg, run_dir, dataset, sampler, tensorboard=None):
    """An ImageLogger when log_images or log_attention is on, else None."""
    if not (cfg.logging.log_images or cfg.logging.log_attention):
        return None
    return ImageLogger(cfg, run_dir, dataset, sampler, tensorboard)

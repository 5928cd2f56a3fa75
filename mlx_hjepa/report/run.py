"""Everything the report reads from a run (through RunDir) and builds from its config, in one place."""

import json
from dataclasses import dataclass, field
from pathlib import Path
import mlx.core as mx
import numpy as np

from .. import config as C
from ..data import build_train_dataset
from ..eval.features import load_eval_encoder, random_encoder_like
from ..masks import MultiBlockMaskSampler
from ..models import normalize_images
from ..rundir import CONFIG_FILE, RUN_FILE, RunDir
from ..viz import first_training_batch


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
    run = RunDir(run_dir)
    if run.read_config() is None:
        raise FileNotFoundError(f"{run.path} has no readable config.yaml; pass a run directory written by "
                                "mlx_hjepa.train.")
    cfg = C.load_config(run.path / CONFIG_FILE)
    encoder, weights, _ = load_eval_encoder(run.path, "target")
    evals = {f.name: json.loads(f.read_text()) for f in sorted(run.path.glob("eval*.json"))}
    launch = json.loads((run.path / RUN_FILE).read_text()) if (run.path / RUN_FILE).is_file() else {}
    return Run(run.path, cfg, encoder, weights, run.read_metrics(), evals, launch, run.path / "feature_cache")


def mask_sampler(cfg):
    return MultiBlockMaskSampler.from_config(cfg.masking, C.grid_size(cfg), cfg.model.num_hierarchies,
                                             cfg.experiment.seed)


def normalize(images_uint8):
    """uint8 (B, H, W, 3) -> the float input the encoders were trained on."""
    return normalize_images(mx.array(np.asarray(images_uint8)))


def random_init_like(encoder, cfg):
    """The encoder as the run initialised it (same seed), before any training."""
    return random_encoder_like(encoder, cfg.experiment.seed)


def training_sample(cfg, count):
    """(images, masks) of the run's first step, from the config alone."""
    return first_training_batch(cfg, build_train_dataset(cfg), mask_sampler(cfg), count)

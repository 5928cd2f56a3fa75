"""Run-directory checkpoints: written to a hidden temporary folder, then renamed into place.

    RUN/checkpoints/step_00001234/{model.safetensors, optimizer.safetensors, state.json}
    RUN/checkpoints/latest.json = {"checkpoint": "step_00001234"}

A kill at any moment leaves either the old or the new `latest.json`, each naming a
complete folder: the rename of the folder comes before the rename of `latest.json`.
"""

import json
import os
import shutil
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_map_with_path

from ..export import LATEST_FILE, MODEL_FILE, hjepa_config, load_model_checkpoint, save_model_checkpoint

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


def write_json_atomic(path, data):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(checkpoints_dir, name, model, optimizer_state, trainer_state):
    """Write checkpoint `name` and point latest.json at it. Returns its folder."""
    checkpoints_dir = Path(checkpoints_dir)
    final = checkpoints_dir / name
    tmp = checkpoints_dir / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model_checkpoint(model, tmp / MODEL_FILE)
    # No MLX RNG state: the step draws no random numbers (masks, crops and flips come from
    # numpy generators keyed by seed, epoch and index), so weights + optimizer + position resume exactly.
    arrays = dict(tree_flatten(optimizer_state))
    mx.save_safetensors(str(tmp / OPTIMIZER_FILE), arrays)
    write_json_atomic(tmp / STATE_FILE, trainer_state)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json_atomic(checkpoints_dir / LATEST_FILE, {"checkpoint": name})
    return final


def latest_checkpoint(checkpoints_dir):
    """The folder latest.json names, or None when the run has no checkpoint yet."""
    latest = Path(checkpoints_dir) / LATEST_FILE
    if not latest.is_file():
        return None
    folder = Path(checkpoints_dir) / json.loads(latest.read_text())["checkpoint"]
    if not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(f"{latest} names {folder.name}, which is incomplete; point latest.json at an older "
                                "checkpoint folder in the same directory.")
    return folder


def load_checkpoint(folder, model, optimizer):
    """Load weights, optimizer state and RNG into the live objects; returns the trainer state dict."""
    folder = Path(folder)
    saved = load_model_checkpoint(folder / MODEL_FILE)
    if hjepa_config(saved) != hjepa_config(model):
        raise ValueError(f"{folder} holds a model of another shape ({hjepa_config(saved)}) than the config builds "
                         f"({hjepa_config(model)}); resume with the run's own config.yaml or start a new run.")
    model.update(saved.parameters())
    arrays = mx.load(str(folder / OPTIMIZER_FILE))
    expected = {k for k, _ in tree_flatten(optimizer.state)}
    if expected != set(arrays):
        raise ValueError(f"{folder / OPTIMIZER_FILE} does not match this run's optimizer (missing "
                         f"{sorted(expected - set(arrays))[:3]}, unexpected {sorted(set(arrays) - expected)[:3]}); "
                         "resume with the same config (training.accumulation_steps included).")
    optimizer.state.update(tree_map_with_path(lambda path, _: arrays[path], optimizer.state))
    return json.loads((folder / STATE_FILE).read_text())


def prune_checkpoints(checkpoints_dir, keep):
    """Delete step_* folders not in `keep` (names)."""
    for folder in Path(checkpoints_dir).glob("step_*"):
        if folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)

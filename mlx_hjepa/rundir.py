"""The run directory: the one place that knows its layout.

    RUN/config.yaml                 the resolved config (loadable again)
    RUN/run.json                    the launch: world size, global batch, peak lr, versions
    RUN/metrics.jsonl               one JSON record per logged step, eval and event
    RUN/checkpoints/step_00001234/  {model.safetensors, optimizer.safetensors, state.json}
    RUN/checkpoints/latest.json     {"checkpoint": "step_00001234"}
    RUN/encoder.safetensors         the exported target encoder (timm layout), at the end
    RUN/.lock                       held (flock) by the one process writing the run

A checkpoint is written into a hidden temporary folder, fsynced, renamed to a name that no
other folder has, and only then named by latest.json; older folders are removed after that.
So a kill at any moment leaves latest.json naming a complete checkpoint, and a re-save of a
step that already has a checkpoint never touches the live one.
"""

import fcntl
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import mlx.core as mx
import yaml
from mlx.utils import tree_flatten, tree_map_with_path

from .weights import (fsync_dir, load_encoder_file, load_model_checkpoint, read_safetensors, save_model_checkpoint,
                      save_safetensors, write_json_atomic, write_text_atomic)

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
LATEST_FILE = "latest.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"  # written last: its presence marks a complete checkpoint
ENCODER_FILE = "encoder.safetensors"
LOCK_FILE = ".lock"
CHECKPOINT_FILES = (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE)  # a checkpoint training can resume from
_CHECKPOINT_NAME = re.compile(r"step_(\d+)(?:-(\d+))?")


class RunDirLocked(RuntimeError):
    """Another process is writing this run directory."""


class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self.checkpoints = self.path / CHECKPOINTS
        self._lock_fd = None

    def __repr__(self):
        return f"RunDir({str(self.path)!r})"

    # -- one writer ---------------------------------------------------------------------
    def lock(self):
        """Take the run's exclusive OS lock (released by the OS when this process dies), or raise
        RunDirLocked naming the holder's PID."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirLocked(f"{self.path} is in use by another training process (PID {holder}); wait for it to "
                               "finish or stop it, or choose another experiment.name / --output-dir.") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return self

    def begin(self, config_yaml, launch, fresh):
        """Start writing (under the lock): clear what killed writes left, and record the config and
        the launch. `fresh` (no checkpoint to resume) also clears metrics of an attempt that died
        before its first checkpoint."""
        assert self._lock_fd is not None, "lock() the run directory before writing it"
        self.clean_temporaries()
        if fresh:
            self.truncate_metrics(0)
        self.write_config(config_yaml)
        self.write_run_info(launch)

    def unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    # -- config and launch --------------------------------------------------------------
    def write_config(self, yaml_text):
        write_text_atomic(self.path / CONFIG_FILE, yaml_text)

    def read_config(self):
        """The run's config.yaml as a dict, or None when there is none (or it is unreadable)."""
        try:
            return yaml.safe_load((self.path / CONFIG_FILE).read_text())
        except (OSError, yaml.YAMLError):
            return None

    def write_run_info(self, info):
        write_json_atomic(self.path / RUN_FILE, info)

    def write_json(self, name, data):
        """A JSON result file in the run directory (eval results), written atomically."""
        return write_json_atomic(self.path / name, data)

    @property
    def encoder_file(self):
        return self.path / ENCODER_FILE

    # -- metrics ------------------------------------------------------------------------
    @property
    def metrics_file(self):
        return self.path / METRICS_FILE

    def append_metrics(self, record):
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
            f.flush()

    def read_metrics(self):
        """Every complete record; a torn last line (a kill during an append) is left out."""
        records, _ = _parse_metrics(self.metrics_file)
        return records

    def truncate_metrics(self, step):
        """Keep the records up to `step` (those after it will be logged again), dropping a torn line."""
        if not self.metrics_file.is_file():
            return
        records, torn = _parse_metrics(self.metrics_file)
        if torn:
            warnings.warn(f"{self.metrics_file}: dropped a torn last line left by an interrupted write.", stacklevel=2)
        kept = [r for r in records if r.get("step", 0) <= step]
        write_text_atomic(self.metrics_file, "".join(json.dumps(r, default=float) + "\n" for r in kept))

    # -- checkpoints --------------------------------------------------------------------
    def save_checkpoint(self, step, model, optimizer_state, trainer_state):
        """Write a complete checkpoint of `step`, point latest.json at it, and return its folder."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        name = self._free_name(step)
        tmp = self.checkpoints / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_model_checkpoint(model, tmp / MODEL_FILE)
        # No MLX RNG state: the step draws no random numbers (masks, crops and flips come from
        # numpy generators keyed by seed, epoch and index), so weights + optimizer + position resume exactly.
        save_safetensors(tmp / OPTIMIZER_FILE, dict(tree_flatten(optimizer_state)))
        write_json_atomic(tmp / STATE_FILE, trainer_state)
        os.rename(tmp, self.checkpoints / name)  # a fresh name: never over a live checkpoint
        fsync_dir(self.checkpoints)
        write_json_atomic(self.checkpoints / LATEST_FILE, {"checkpoint": name})
        return self.checkpoints / name

    def _free_name(self, step):
        base = f"step_{step:08d}"
        name, n = base, 0
        while (self.checkpoints / name).exists():
            n += 1
            name = f"{base}-{n}"
        return name

    def complete_checkpoints(self, required=CHECKPOINT_FILES):
        """Checkpoint folders holding the `required` files, oldest first (by step, then by the order
        they were written)."""
        found = []
        if self.checkpoints.is_dir():
            for folder in self.checkpoints.iterdir():
                match = _CHECKPOINT_NAME.fullmatch(folder.name)
                if match and _has(folder, required):
                    found.append(((int(match[1]), int(match[2] or 0)), folder))
        return [folder for _, folder in sorted(found)]

    def latest_checkpoint(self, required=CHECKPOINT_FILES):
        """The folder latest.json names; if that is missing or lacks a `required` file, the newest
        folder that has them (with a warning); None when the run has none."""
        latest = self.checkpoints / LATEST_FILE
        try:
            folder = self.checkpoints / json.loads(latest.read_text())["checkpoint"]
            if _has(folder, required):
                return folder
            problem = f"names {folder.name}, which is incomplete"
        except FileNotFoundError:
            problem = "is missing"
        except (OSError, ValueError, KeyError, TypeError):
            problem = "is unreadable"
        complete = self.complete_checkpoints(required)
        if complete:
            warnings.warn(f"{latest} {problem}; using the newest complete checkpoint, {complete[-1].name}.",
                          stacklevel=2)
            return complete[-1]
        return None

    def describe_latest(self, last_is="the last checkpoint"):
        """Where a user finds the run's last checkpoint, as a clause for error messages."""
        last = self.latest_checkpoint()
        return f"{last_is} is {last}" if last else "no checkpoint was written yet"

    def prune(self, keep_steps):
        """Remove checkpoints of steps not in `keep_steps`, older copies of a kept step, and temporaries
        left by interrupted saves. The folder latest.json names is always kept."""
        latest = self.latest_checkpoint()
        newest_of_step = {checkpoint_step(folder): folder for folder in self.complete_checkpoints()}
        keep = {newest_of_step[s] for s in keep_steps if s in newest_of_step} | ({latest} if latest else set())
        for folder in self._folders():
            if _CHECKPOINT_NAME.fullmatch(folder.name) and folder not in keep:
                shutil.rmtree(folder, ignore_errors=True)
        self.clean_temporaries()

    def clean_temporaries(self):
        """Remove what interrupted writes left: hidden checkpoint folders and .NAME.tmp-PID files
        (only the lock holder may call this)."""
        for folder in self._folders():
            if folder.name.startswith(".step_"):
                shutil.rmtree(folder, ignore_errors=True)
        for parent in (self.path, self.checkpoints):
            for leftover in parent.glob(".*.tmp-*") if parent.is_dir() else []:
                if leftover.is_file():
                    leftover.unlink()

    def _folders(self):
        return [f for f in self.checkpoints.iterdir() if f.is_dir()] if self.checkpoints.is_dir() else []

    # -- weights for evaluation and export ----------------------------------------------
    def weights_file(self):
        """The file evaluation and export read: the latest checkpoint's model (both encoders), else
        the exported encoder."""
        latest = self.latest_checkpoint(required=(MODEL_FILE,))
        if latest is not None:
            return latest / MODEL_FILE
        if (self.path / ENCODER_FILE).is_file():
            return self.path / ENCODER_FILE
        raise FileNotFoundError(f"{self.path} holds neither {MODEL_FILE}, a checkpoint that {CHECKPOINTS}/{LATEST_FILE} "
                                f"names, nor {ENCODER_FILE}; pass a run directory that has saved at least one "
                                "checkpoint.")


def checkpoint_step(folder):
    return int(_CHECKPOINT_NAME.fullmatch(Path(folder).name)[1])


def _has(folder, files):
    return all((folder / f).is_file() for f in files)


def _parse_metrics(path):
    """(records, whether the last line was torn) of a metrics.jsonl file."""
    if not path.is_file():
        return [], False
    records, torn = [], False
    lines = path.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ValueError(f"{path} line {i + 1} is not JSON; the file was edited or damaged: fix or delete "
                                 "that line, then resume.") from None
            torn = True
    return records, torn


def load_checkpoint(folder, model, optimizer):
    """Load a checkpoint's weights and optimizer state into the live objects; returns its trainer state."""
    folder = Path(folder)
    saved = load_model_checkpoint(folder / MODEL_FILE)
    if saved.config() != model.config():
        raise ValueError(f"{folder} holds a model of another shape ({saved.config()}) than the config builds "
                         f"({model.config()}); resume with the run's own config.yaml or start a new run.")
    model.update(saved.parameters())
    arrays = mx.load(str(folder / OPTIMIZER_FILE))
    expected = {k for k, _ in tree_flatten(optimizer.state)}
    if expected != set(arrays):
        raise ValueError(f"{folder / OPTIMIZER_FILE} does not match this run's optimizer (missing "
                         f"{sorted(expected - set(arrays))[:3]}, unexpected {sorted(set(arrays) - expected)[:3]}); "
                         "resume with the same config (training.accumulation_steps included).")
    optimizer.state.update(tree_map_with_path(lambda path, _: arrays[path], optimizer.state))
    return read_trainer_state(folder)


def read_trainer_state(folder):
    return json.loads((Path(folder) / STATE_FILE).read_text())


# ---------------------------------------------------------------- weights from any source

def resolve_weights(source):
    """A run directory, a checkpoint folder or a .safetensors file -> the weights file to read."""
    source = Path(source)
    if source.is_file():
        return source
    if not source.is_dir():
        raise FileNotFoundError(f"{source} does not exist; pass a run directory, a checkpoint folder "
                                "or a .safetensors file.")
    if (source / MODEL_FILE).is_file():
        return source / MODEL_FILE
    return RunDir(source).weights_file()


def training_config_of(weights_file):
    """The config of the run a weights file belongs to (RUN/checkpoints/step_*/model.safetensors or
    RUN/encoder.safetensors), else the training_config stored in its metadata, else None."""
    path = Path(weights_file).resolve()
    run = path.parent.parent.parent if path.parent.parent.name == CHECKPOINTS else path.parent
    config = RunDir(run).read_config() if path.name in (MODEL_FILE, ENCODER_FILE) else None
    if config is None:
        _, metadata = read_safetensors(path)
        if "training_config" in metadata:
            config = json.loads(metadata["training_config"])
    return config


def load_encoder(source, which="target", **expected):
    """The MLX VisionTransformer that `source` holds: an exported encoder (timm or MLX layout), a
    full checkpoint file, a checkpoint folder or a run directory (then `which` picks the target or
    context encoder). Keyword arguments such as `embed_dim=384` are checked against the file."""
    return load_encoder_file(resolve_weights(source), which, **expected)

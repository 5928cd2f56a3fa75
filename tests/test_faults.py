"""Fault injection: a run directory never loses or mixes data.

A training process is killed (SIGKILL) just before each file-system step of a checkpoint save,
a prune and a metrics append (mkdir, fsync, rename/replace, rmtree, and half-way through a
metrics line), then resumed with --resume auto. Each time a checkpoint must load and the final
weights must equal an uninterrupted run. Also: two writers at once, a read-only output folder,
a torn metrics line, file names that are not UTF-8, OS errors as one sentence.
"""

import builtins
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_hjepa.eval.__main__ import main as eval_main
from mlx_hjepa.rundir import RunDir
from mlx_hjepa.train import __main__ as train_cli
from mlx_hjepa.weights import load_model_checkpoint, save_model_checkpoint

ROOT = Path(__file__).parent.parent
# 12 optimizer steps of a 16-wide ViT: checkpoints at steps 4, 8 and 12, one metrics line per step.
TINY_RUN = ["model.encoder_type=vit_tiny_patch8", "model.embed_dim=16", "model.depth=1", "model.num_heads=2",
            "model.num_hierarchies=2", "model.predictor.embed_dim=16", "model.predictor.depth=1",
            "model.predictor.num_heads=2", "data.dataset=synthetic", "data.image_size=48", "data.batch_size=8",
            "data.num_workers=1", "data.samples_per_epoch=32", "training.epochs=3", "training.warmup_epochs=1",
            "logging.log_frequency=1", "evaluation.eval_frequency=0", "loss.hierarchy_weights=[1.0, 0.5]",
            "checkpoint.save_frequency=1", "checkpoint.keep_last_k=1"]

# Runs `python -m mlx_hjepa.train` and SIGKILLs itself at the CRASH_AT-th file-system step taken
# inside the run directory's writers (CRASH_AT=0: never; CRASH_LOG lists the steps taken).
CRASH_DRIVER = r"""
import os, shutil, signal, sys
import mlx_hjepa
from mlx_hjepa import rundir
from mlx_hjepa.train import __main__ as cli

target, log = int(os.environ["CRASH_AT"]), os.environ.get("CRASH_LOG")
state = {"count": 0, "depth": 0, "where": ""}

def point(name):
    if state["depth"] == 0:
        return False
    state["count"] += 1
    if log:
        with open(log, "a") as f:
            f.write(f"{state['where']}:{name}\n")
    return state["count"] == target

def kill():
    os.kill(os.getpid(), signal.SIGKILL)

def before(module, name):
    real = getattr(module, name)
    def wrapped(*args, **kwargs):
        if point(name):
            kill()
        return real(*args, **kwargs)
    setattr(module, name, wrapped)

for name in ("fsync", "replace", "rename", "mkdir"):
    before(os, name)
before(shutil, "rmtree")

def inside(method):
    real = getattr(rundir.RunDir, method)
    def wrapped(self, *args, **kwargs):
        state["depth"] += 1
        state["where"] = method
        try:
            return real(self, *args, **kwargs)
        finally:
            state["depth"] -= 1
    setattr(rundir.RunDir, method, wrapped)

for method in ("save_checkpoint", "prune", "truncate_metrics", "write_config", "write_run_info"):
    inside(method)

real_append = rundir.RunDir.append_metrics
def append(self, record):
    state["depth"] += 1
    state["where"] = "append_metrics"
    try:
        if point("half-line"):
            line = rundir.json.dumps(record)
            with open(self.metrics_file, "a") as f:
                f.write(line[: len(line) // 2])
            kill()
        return real_append(self, record)
    finally:
        state["depth"] -= 1
rundir.RunDir.append_metrics = append

sys.exit(cli.main(sys.argv[1:]))
"""


def train_args(out, *extra):
    return [str(ROOT / "configs" / "quickstart.yaml"), "--output-dir", str(out),
            *(a for item in TINY_RUN + list(extra) for a in ("--set", item))]


def run_with_crash(out, crash_at, log=None, *extra):
    env = dict(os.environ, CRASH_AT=str(crash_at), **({"CRASH_LOG": str(log)} if log else {}))
    return subprocess.run([sys.executable, "-c", CRASH_DRIVER, *train_args(out), *extra], env=env,
                          capture_output=True, text=True, timeout=300)


def encoder(run):
    return {k: np.array(v) for k, v in mx.load(str(run / "encoder.safetensors")).items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, and the file-system steps it took, in order."""
    out = tmp_path_factory.mktemp("reference")
    log = out / "steps.log"
    proc = run_with_crash(out, 0, log)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return encoder(out / "quickstart"), log.read_text().splitlines()


def crash_points(steps):
    """Which steps to crash at (1-based): every step of the second checkpoint's save and prune, the
    rename and the prune of the final save, a torn metrics line before and after the second save,
    and the first config write."""
    chosen = {1}
    saves = [i for i, s in enumerate(steps) if s == "save_checkpoint:mkdir"]
    second, third = saves[1], saves[2]
    block_end = next(i for i in range(second + 1, len(steps)) if steps[i].startswith("append_metrics"))
    chosen |= {i + 1 for i in range(second, block_end)}
    chosen |= {i + 1 for i in range(third, len(steps)) if steps[i] in ("save_checkpoint:rename", "prune:rmtree")}
    appends = [i + 1 for i, s in enumerate(steps) if s == "append_metrics:half-line"]
    chosen |= {appends[2], next(a for a in appends if a > block_end)}
    return sorted(chosen)


def crash_and_resume(tmp_path, n):
    """Kill a run at file-system step n, check what it left, resume it; returns the resumed run."""
    out = tmp_path / f"crash_{n}"
    crashed = run_with_crash(out, n)
    if crashed.returncode != -signal.SIGKILL:
        return f"was not reached (exit {crashed.returncode})"
    run = RunDir(out / "quickstart")
    latest = run.latest_checkpoint()
    if latest is not None:  # every checkpoint latest.json can name loads
        load_model_checkpoint(latest / "model.safetensors")
    resumed = run_with_crash(out, 0, None, "--resume", "auto")
    if resumed.returncode != 0:
        return f"resume failed: {resumed.stderr[-1500:]}"
    return run


def test_every_crash_point_resumes_to_the_uninterrupted_weights(reference, tmp_path):
    weights, steps = reference
    kinds = {s.split(":")[1] for s in steps}
    assert {"mkdir", "fsync", "replace", "rename", "rmtree", "half-line"} <= kinds
    points = crash_points(steps)
    assert len(points) >= 20
    with ThreadPoolExecutor(2) as pool:  # each point is two short processes: use both cores
        runs = dict(zip(points, pool.map(lambda n: crash_and_resume(tmp_path, n), points)))
    worst = 0.0
    for n, run in runs.items():
        assert isinstance(run, RunDir), f"crash point {n} ({steps[n - 1]}) {run}"
        got = encoder(run.path)
        difference = max(float(np.abs(got[k] - weights[k]).max()) for k in weights)
        # one optimizer step more or less moves weights by ~1e-3; two processes differ by <1e-5
        assert difference < 1e-4, f"crash point {n} ({steps[n - 1]}): weights differ by {difference}"
        worst = max(worst, difference)
        logged = [r["step"] for r in run.read_metrics() if "loss" in r]
        assert logged == list(range(1, 13)), f"crash point {n}: metrics steps {logged}"
        assert not list(run.checkpoints.glob(".step_*")), f"crash point {n}: temporaries left behind"
    print(f"\n{len(points)} crash points of {len(steps)} file-system steps; largest weight difference {worst:.2e}")


# ---------------------------------------------------------------- two writers, read-only, torn metrics

def test_a_second_writer_stops_at_once_naming_the_first(tmp_path):
    first = subprocess.Popen([sys.executable, "-m", "mlx_hjepa.train", *train_args(tmp_path, "training.epochs=200")],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = tmp_path / "quickstart" / "metrics.jsonl"
        for _ in range(600):
            if metrics.is_file() and metrics.read_text().count("\n") >= 2:
                break
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "mlx_hjepa.train",
                                 *train_args(tmp_path, "training.epochs=200", "experiment.seed=1"), "--resume", "auto"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 1
    assert f"in use by another training process (PID {first.pid})" in second.stderr
    assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    assert "seed: 0" in (tmp_path / "quickstart" / "config.yaml").read_text()  # the second wrote nothing


class ReadOnly:
    """Every write under `root` fails as on a read-only file system (tests run as root, so
    permission bits would not stop them)."""

    def __init__(self, monkeypatch, root):
        self.root = str(root)
        real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

        def refuse(path):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))

        def under(path):
            return isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(self.root)

        def open_(file, mode="r", *args, **kwargs):
            if under(file) and any(c in mode for c in "wax+"):
                refuse(file)
            return real_open(file, mode, *args, **kwargs)

        def os_open(path, flags, *args, **kwargs):
            if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                refuse(path)
            return real_os_open(path, flags, *args, **kwargs)

        def mkdir(path, *args, **kwargs):
            if under(path):
                refuse(path)
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(os, "mkdir", mkdir)


def test_read_only_output_folder_is_one_sentence(tmp_path, monkeypatch, capsys):
    ReadOnly(monkeypatch, tmp_path / "ro")
    assert train_cli.main(train_args(tmp_path / "ro")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "read-only" in err and str(tmp_path / "ro") in err and "--output-dir" in err


def test_resume_of_a_run_on_a_read_only_file_system_is_one_sentence(tmp_path, monkeypatch, capsys):
    assert train_cli.main(train_args(tmp_path, "training.epochs=1")) == 0
    capsys.readouterr()
    ReadOnly(monkeypatch, tmp_path)
    assert train_cli.main(train_args(tmp_path, "training.epochs=2") + ["--resume", "auto"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "read-only" in err and "Traceback" not in err


def test_output_dir_that_is_a_file_is_one_sentence(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert train_cli.main(train_args(tmp_path / "file")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err and str(tmp_path / "file") in err


def test_debug_flag_shows_the_traceback_instead(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "mlx_hjepa.train", *train_args(tmp_path / "file"), "--debug"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "NotADirectoryError" in proc.stderr


def test_a_torn_metrics_line_does_not_block_resume(tmp_path, capsys):
    assert train_cli.main(train_args(tmp_path) + ["--stop-at-step", "6"]) == 0
    metrics = tmp_path / "quickstart" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 7, "epoch": 1, "lo')  # a kill during the append
    with pytest.warns(UserWarning, match="torn last line"):
        assert train_cli.main(train_args(tmp_path) + ["--resume", "auto"]) == 0
    assert [r["step"] for r in RunDir(tmp_path / "quickstart").read_metrics() if "loss" in r] == list(range(1, 13))


def test_resaving_a_stopped_epoch_end_keeps_a_loadable_checkpoint_at_every_moment(tmp_path):
    """--stop-at-step at an epoch end, then --resume auto saves the same step again: the live
    checkpoint is never removed before the new one is complete and named by latest.json."""
    assert train_cli.main(train_args(tmp_path, "checkpoint.keep_last_k=1") + ["--stop-at-step", "4"]) == 0
    run = RunDir(tmp_path / "quickstart")
    first = run.latest_checkpoint()
    steps_log = tmp_path / "steps.log"
    proc = run_with_crash(tmp_path, 0, steps_log, "--resume", "auto", "--stop-at-step", "5")
    assert proc.returncode == 0, proc.stderr[-1500:]
    steps = steps_log.read_text().splitlines()
    # the re-save of step 4 happens before any of first's files are removed
    assert steps.index("prune:rmtree") > steps.index("save_checkpoint:rename")
    resave = range(steps.index("save_checkpoint:mkdir"), steps.index("save_checkpoint:mkdir", steps.index("prune:rmtree")))
    for n in (i + 1 for i in resave):  # every step from the re-save of step 4 until the next save
        target = tmp_path / f"at_{n}"
        shutil.copytree(tmp_path / "quickstart", target / "quickstart")
        crashed = run_with_crash(target, n, None, "--resume", "auto", "--stop-at-step", "5")
        assert crashed.returncode in (-signal.SIGKILL, 0)
        latest = RunDir(target / "quickstart").latest_checkpoint()
        assert latest is not None and load_model_checkpoint(latest / "model.safetensors") is not None
    assert first.name == "step_00000004"


# ---------------------------------------------------------------- names that are not UTF-8

def test_file_names_that_are_not_utf8_survive_training_and_evaluation(tmp_path):
    from PIL import Image

    root = tmp_path / "data"
    for split in ("train", "val"):
        for c in range(2):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(6):
                name = os.fsdecode(b"\xff\xfe" + f"{i}.png".encode()) if i == 0 else f"{i}.png"
                Image.fromarray(np.full((48, 48, 3), (40 * i + 100 * c) % 256, np.uint8)).save(folder / name)
    assert train_cli.main(train_args(tmp_path / "runs", "data.dataset=imagefolder", f"data.data_path={root}",
                                     "data.samples_per_epoch=16", "training.epochs=1")) == 0
    run = tmp_path / "runs" / "quickstart"
    assert eval_main([str(run), "--dataset", "imagefolder", "--data-path", str(root), "--protocol", "knn",
                      "--num-workers", "0", "--k", "3"]) == 0
    assert json.loads((run / "eval.json").read_text())["knn"]["top1"] >= 0.0


def test_os_errors_name_the_path_even_when_it_is_not_utf8(capsys):
    from mlx_hjepa.errors import os_error_sentence

    text = os_error_sentence(OSError(errno.ELOOP, "Too many levels of symbolic links", os.fsdecode(b"/d/\xff.png")))
    assert "\\xff.png" in text and "symbolic link" in text
    text.encode("utf-8")  # printable whatever the terminal's encoding


def test_model_checkpoint_helpers_still_write_atomically(tmp_path):
    from helpers import tiny_hjepa

    path = save_model_checkpoint(tiny_hjepa(), tmp_path / "m.safetensors")
    assert path.is_file() and not list(tmp_path.glob(".*tmp*"))


def test_a_symlink_loop_in_a_class_folder_is_skipped_with_a_warning(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "data"
    for c in range(2):
        folder = root / "train" / f"c{c}"
        folder.mkdir(parents=True)
        for i in range(8):
            Image.fromarray(np.full((48, 48, 3), 25 * i + 60 * c, np.uint8)).save(folder / f"{i}.png")
    (root / "train" / "c0" / "a.png").symlink_to("b.png")
    (root / "train" / "c0" / "b.png").symlink_to("a.png")
    with pytest.warns(UserWarning, match="b.png.*symbolic links|a.png.*symbolic links"):
        code = train_cli.main(train_args(tmp_path / "runs", "data.dataset=imagefolder", f"data.data_path={root}",
                                         "training.epochs=1"))
    assert code == 0


def test_ctrl_c_twice_ends_in_one_sentence_with_a_checkpoint_and_no_temporaries(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "mlx_hjepa.train", *train_args(tmp_path, "training.epochs=200")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "quickstart" / "metrics.jsonl"
    for _ in range(600):
        if metrics.is_file() and metrics.read_text().count("\n") >= 6:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # impatient: a second Ctrl-C while the checkpoint is written
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (1, 130) and "Traceback" not in err, err[-2000:]
    assert [line for line in err.splitlines() if line.startswith("error:")], err[-2000:]
    run = RunDir(tmp_path / "quickstart")
    assert run.latest_checkpoint() is not None
    assert train_cli.main(train_args(tmp_path, "training.epochs=200") + ["--resume", "auto", "--stop-at-step",
                                                                         str(json.loads((run.latest_checkpoint() / "state.json").read_text())["step"] + 1)]) == 0
    assert not list(run.checkpoints.glob(".step_*"))

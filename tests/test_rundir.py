"""RunDir: checkpoints that never lose the live one, the lock, metrics, and run directories
written by earlier versions (tests/fixtures/run_v0_1, made by mlx-hjepa 0.1.0 at commit 101f7f8)."""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from helpers import tiny_hjepa, tiny_step

from mlx_hjepa import config as C
from mlx_hjepa import export, load_encoder
from mlx_hjepa.eval.__main__ import main as eval_main
from mlx_hjepa.models import HJEPA
from mlx_hjepa.rundir import RunDir, RunDirLocked, load_checkpoint, resolve_weights
from mlx_hjepa.train import __main__ as train_cli

ROOT = Path(__file__).parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "run_v0_1"


@pytest.fixture(scope="module")
def model_and_step():
    model = tiny_hjepa()
    return model, tiny_step(model)


def save(run, step, model_and_step, **state):
    model, train_step = model_and_step
    return run.save_checkpoint(step, model, train_step.optimizer.state, {"step": step, **state})


def test_save_points_latest_at_a_complete_checkpoint(tmp_path, model_and_step):
    run = RunDir(tmp_path)
    folder = save(run, 4, model_and_step)
    assert folder.name == "step_00000004" and run.latest_checkpoint() == folder
    assert json.loads((run.checkpoints / "latest.json").read_text()) == {"checkpoint": "step_00000004"}
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    assert not list(run.checkpoints.glob(".*"))  # no temporaries left


def test_resaving_a_step_never_touches_the_live_checkpoint(tmp_path, model_and_step):
    run = RunDir(tmp_path)
    first = save(run, 4, model_and_step, epoch=0)
    before = (first / "model.safetensors").read_bytes()
    second = save(run, 4, model_and_step, epoch=1)
    assert second != first and second.name == "step_00000004-1"
    assert (first / "model.safetensors").read_bytes() == before  # still whole until latest moved on
    assert run.latest_checkpoint() == second
    run.prune({4})
    assert [p.name for p in run.complete_checkpoints()] == ["step_00000004-1"]


def test_prune_keeps_latest_and_asked_steps_and_cleans_temporaries(tmp_path, model_and_step):
    run = RunDir(tmp_path)
    for step in (2, 4, 6):
        save(run, step, model_and_step)
    (run.checkpoints / ".step_00000008.tmp-123").mkdir()
    run.prune({2})
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["latest.json", "step_00000002", "step_00000006"]


def test_latest_falls_back_to_the_newest_complete_checkpoint(tmp_path, model_and_step):
    run = RunDir(tmp_path)
    save(run, 2, model_and_step)
    newest = save(run, 4, model_and_step)
    (run.checkpoints / "latest.json").write_text(json.dumps({"checkpoint": "step_00000009"}))
    with pytest.warns(UserWarning, match="step_00000009, which is incomplete; using the newest complete checkpoint"):
        assert run.latest_checkpoint() == newest
    (run.checkpoints / "latest.json").write_text('{"checkpoint": "step_0')  # torn
    with pytest.warns(UserWarning, match="unreadable"):
        assert run.latest_checkpoint() == newest
    (newest / "state.json").unlink()  # an incomplete folder never counts
    with pytest.warns(UserWarning):
        assert run.latest_checkpoint().name == "step_00000002"


def test_empty_run_has_no_checkpoint_and_says_what_to_pass(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.latest_checkpoint() is None
    with pytest.raises(FileNotFoundError, match="checkpoints/latest.json"):
        run.weights_file()


LOCK_AND_WAIT = "import sys, time; from mlx_hjepa.rundir import RunDir; RunDir(sys.argv[1]).lock(); print('locked', flush=True); time.sleep(60)"


def test_second_writer_is_refused_with_the_holders_pid_and_a_dead_holder_frees_the_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", LOCK_AND_WAIT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirLocked, match=f"in use by another training process \\(PID {holder.pid}\\)"):
            RunDir(tmp_path).lock()
    finally:
        holder.kill()
        holder.wait()
    run = RunDir(tmp_path).lock()  # the OS released the dead process's lock: no stale lock file blocks
    run.unlock()


def test_metrics_append_read_and_truncate_drop_a_torn_line(tmp_path):
    run = RunDir(tmp_path)
    for step in (1, 2, 3):
        run.append_metrics({"step": step, "loss": 1.0 / step})
    with open(run.metrics_file, "a") as f:
        f.write('{"step": 4, "lo')  # a kill during the append
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3]
    with pytest.warns(UserWarning, match="torn last line"):
        run.truncate_metrics(2)
    assert [json.loads(line)["step"] for line in run.metrics_file.read_text().splitlines()] == [1, 2]


def test_a_damaged_middle_line_is_not_silently_dropped(tmp_path):
    run = RunDir(tmp_path)
    run.metrics_file.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        run.read_metrics()


# ---------------------------------------------------------------- run directories of mlx-hjepa 0.1.0

def old_run(tmp_path):
    run = tmp_path / "old_run"
    shutil.copytree(FIXTURE, run)
    return run


def encoder_weights(path):
    return {k: np.array(v) for k, v in mx.load(str(path)).items()}


def test_old_run_directory_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path):
    run = old_run(tmp_path)
    assert train_cli.main(["--resume", str(run)]) == 0  # 6 steps by 0.1.0, 6 more by this version
    fresh = tmp_path / "fresh"
    config = run / "config.yaml"
    assert train_cli.main([str(config), "--output-dir", str(fresh)]) == 0
    a, b = encoder_weights(run / "encoder.safetensors"), encoder_weights(fresh / "old_run" / "encoder.safetensors")
    assert a.keys() == b.keys()
    # two processes, threaded BLAS: ~1e-5 apart at most; one step more or less moves weights by ~1e-3
    assert max(np.abs(a[k] - b[k]).max() for k in a) < 1e-4
    steps = [r["step"] for r in RunDir(run).read_metrics() if "loss" in r]
    assert steps == list(range(1, 13))  # resumed metrics continue the old file without gaps or repeats


def test_old_run_directory_evaluates_and_exports(tmp_path):
    run = old_run(tmp_path)
    assert resolve_weights(run) == run / "checkpoints" / "step_00000006" / "model.safetensors"
    assert eval_main([str(run), "--dataset", "synthetic", "--protocol", "knn", "--num-workers", "0",
                      "--dataset-option", "num_samples=40", "--k", "5", "--no-cache"]) == 0
    assert "knn" in json.loads((run / "eval.json").read_text())
    out = tmp_path / "encoder.safetensors"
    assert export.main([str(run), "--out", str(out)]) == 0
    encoder = load_encoder(out, embed_dim=16, depth=1)
    assert encoder.config() == C.model_config(C.load_config(run / "config.yaml"))["encoder"]


def test_old_checkpoint_loads_into_the_model_this_version_builds(tmp_path):
    cfg = C.load_config(FIXTURE / "config.yaml")
    model = HJEPA.from_config(C.model_config(cfg))
    step = tiny_step(model, hierarchy_weights=tuple(cfg.loss.hierarchy_weights))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = load_checkpoint(FIXTURE / "checkpoints" / "step_00000006", model, step.optimizer)
    assert state["step"] == 6 and int(step.optimizer.state["step"].item()) == 6

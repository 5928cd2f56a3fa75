"""The trainer's collaborators, each on its own: stop policy, metrics window and log, in-run
evaluation, resume checks, device choice."""

import json
import signal

import mlx.core as mx
import numpy as np
import pytest

from mlx_hjepa import config as C
from mlx_hjepa.rundir import RunDir
from mlx_hjepa.train import resume
from mlx_hjepa.devices import DeviceError, select_device
from mlx_hjepa.train import inrun_eval
from mlx_hjepa.train.inrun_eval import EVAL_FILE, InRunEval
from mlx_hjepa.train.metrics import MetricsLog, Window
from mlx_hjepa.train.stops import StopPolicy, Stopped, TrainingError, interrupted_error, peer_lost_error

TINY = {"data": {"dataset": "synthetic", "image_size": 48},
        "model": {"encoder_type": "vit_tiny_patch8", "embed_dim": 32, "depth": 1, "num_heads": 2,
                  "num_hierarchies": 1, "predictor": {"embed_dim": 16, "depth": 1, "num_heads": 2}},
        "training": {"epochs": 4, "warmup_epochs": 1}, "evaluation": {"eval_frequency": 2, "knn_k": 3}}


# ---------------------------------------------------------------- StopPolicy

def test_stop_at_step_waits_for_an_optimizer_step_boundary():
    stops = StopPolicy(world_size=1, stop_at_step=4, accumulation_steps=2)
    assert not stops.should_stop(3, 6)
    assert not stops.should_stop(4, 7)  # half-way through an accumulated step
    assert stops.should_stop(4, 8)


def test_sigterm_in_one_process_asks_for_a_stop_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    stops = StopPolicy(world_size=1, stop_at_step=None, accumulation_steps=1)
    stops.install()
    try:
        assert not stops.should_stop(1, 1)
        signal.raise_signal(signal.SIGTERM)
        assert stops.should_stop(1, 1) and stops.signal_name == "SIGTERM"
    finally:
        stops.restore()
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_with_several_processes_interrupts_at_once():
    stops = StopPolicy(world_size=2, stop_at_step=None, accumulation_steps=1)
    stops.install()
    try:
        with pytest.raises(Stopped):
            signal.raise_signal(signal.SIGTERM)
    finally:
        stops.restore()


def test_other_ranks_leave_signals_alone():
    before = signal.getsignal(signal.SIGTERM)
    stops = StopPolicy(world_size=2, stop_at_step=None, accumulation_steps=1, enabled=False)
    stops.install()
    assert signal.getsignal(signal.SIGTERM) == before


def test_stop_errors_are_one_sentence_naming_rank_step_and_what_to_do():
    for err in (interrupted_error(Stopped(), 1, 7, "checkpoints are on rank 0"),
                interrupted_error(KeyboardInterrupt(), 0, 7, "the last checkpoint is X"),
                peer_lost_error(1, 2, 7, "the last checkpoint is X")):
        text = str(err)
        assert isinstance(err, TrainingError) and "\n" not in text and "step 7" in text and "--resume auto" in text
    assert "SIGTERM" in str(interrupted_error(Stopped(), 1, 7, "")) and "Ctrl-C" in str(
        interrupted_error(KeyboardInterrupt(), 1, 7, ""))


# ---------------------------------------------------------------- Window and MetricsLog

def step_output(loss, levels):
    scalar = lambda v: mx.array(v)
    return {"loss": scalar(loss), "level_losses": mx.array(levels), "lr": scalar(1e-3), "weight_decay": scalar(0.04),
            "ema_momentum": scalar(0.996), "grad_norm": scalar(2.0), "target_std": scalar(0.5),
            "pooled": mx.array(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32))}


def test_window_averages_between_log_lines_and_counts_every_ranks_images():
    window = Window(["a", "b"], world_size=2)
    for loss, dataset in ((1.0, [0, 0, 1]), (3.0, [1, 1, 1])):
        batch = {"image": np.zeros((3, 4, 4, 3), np.uint8), "dataset": np.array(dataset)}
        window.add(step_output(loss, [loss, loss / 2]), loss, batch)
    record = window.record(7, 1, step_output(3.0, [3.0, 1.5]), with_mix=True)
    assert record["step"] == 7 and record["loss"] == 2.0
    assert record["loss_level0"] == 2.0 and record["loss_level1"] == 1.0
    assert record["dataset_mix"] == {"a": 2, "b": 4}
    assert record["img_per_s"] > 0 and 1.0 <= record["effective_rank"] <= 4.0
    window.reset()
    assert window.images == 0 and window.losses == [] and window.mix.sum() == 0


def test_metrics_log_writes_on_rank_zero_only(tmp_path):
    run = RunDir(tmp_path)
    MetricsLog(run, enabled=False).write({"step": 1})
    assert not run.metrics_file.exists()
    log = MetricsLog(run, enabled=True, tensorboard=False)
    log.write({"step": 1, "loss": 0.5})
    log.close()
    assert run.read_metrics() == [{"step": 1, "loss": 0.5}]


# ---------------------------------------------------------------- InRunEval

class FakeModel:
    target_encoder = "encoder"


def test_in_run_eval_schedule_history_and_final_summary(tmp_path, monkeypatch):
    cfg = C.load_config(TINY)
    written, logged = [], []
    metrics = type("Sink", (), {"write": lambda self, r: written.append(r)})()
    evaluation = InRunEval(cfg, metrics, logged.append)
    assert [e for e in range(6) if evaluation.due(e)] == [0, 2]  # not at the end: final() does that
    calls = iter([{"top1": 0.5, "top5": 0.9}, {"top1": 0.6, "top5": 0.95}, {"top1": 0.1, "top5": 0.5}])
    monkeypatch.setattr(InRunEval, "knn", lambda self, encoder: next(calls))
    monkeypatch.setattr(inrun_eval, "build_eval_datasets", lambda cfg: ("bank", "queries"))
    monkeypatch.setattr(inrun_eval, "pixel_knn", lambda bank, queries, size, k: {"top1": 0.3, "top5": 0.7})
    assert evaluation.evaluate(FakeModel(), 10, 2)["knn_top1"] == 0.5
    summary = evaluation.final(FakeModel(), 20, 4, RunDir(tmp_path))
    assert summary == {"knn_top1": 0.6, "random_init_knn_top1": 0.1, "raw_pixels_knn_top1": 0.3}
    assert [r["step"] for r in evaluation.history] == [10, 20]
    assert written[-1]["event"] == "final" and written[-1]["random_init_knn_top1"] == 0.1
    saved = json.loads((tmp_path / EVAL_FILE).read_text())
    assert saved["trained"]["knn_top1"] == 0.6 and saved["random_init"]["top1"] == 0.1
    assert saved["raw_pixels"]["top1"] == 0.3
    assert any("trained 60.00% vs random init 10.00% vs raw pixels 30.00%" in line for line in logged)


def test_in_run_eval_off_or_without_data_skips_with_a_sentence(monkeypatch):
    cfg = C.load_config(TINY, ["evaluation.eval_frequency=0"])
    assert InRunEval(cfg, None, print).evaluate(FakeModel(), 1, 1) is None
    logged = []
    evaluation = InRunEval(C.load_config(TINY), type("S", (), {"write": lambda s, r: None})(), logged.append)

    def missing(self, encoder):
        raise FileNotFoundError("no val/ folder")

    monkeypatch.setattr(InRunEval, "knn", missing)
    assert evaluation.evaluate(FakeModel(), 1, 1) is None and logged == ["k-NN evaluation skipped: no val/ folder"]


# ---------------------------------------------------------------- resume and device

def test_resume_refuses_another_world_size(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"world_size": 2, "step": 3}))
    resume.check_world_size(tmp_path, 2)
    with pytest.raises(TrainingError, match="written by 2 process\\(es\\) and this run has 1; resume it under mlx.launch"):
        resume.check_world_size(tmp_path, 1)


def test_device_gpu_without_a_gpu_backend_is_one_sentence(monkeypatch):
    monkeypatch.setattr(mx, "is_available", lambda device: False)
    with pytest.raises(DeviceError, match="set device: cpu or auto"):
        select_device(C.load_config(TINY, ["device=gpu"]))


def test_half_precision_on_the_cpu_warns():
    with pytest.warns(UserWarning, match="use_amp"):
        select_device(C.load_config(TINY, ["device=cpu", "training.use_amp=true"]))


def test_tensorboard_gets_the_vicreg_terms_and_the_mix_weights_beside_the_counts():
    from mlx_hjepa.train.tensorboard import TensorBoardWriter

    class Summary:  # stands in for tensorboard's protobuf (optional, often not installed)
        Value = staticmethod(lambda tag, simple_value: (tag, simple_value))

        def __init__(self, value):
            self.value = value

    events = []
    writer = TensorBoardWriter.__new__(TensorBoardWriter)
    writer._summary, writer._event = Summary, lambda wall_time, step, summary: (step, dict(summary.value))
    writer._writer = type("W", (), {"add_event": staticmethod(events.append), "flush": staticmethod(lambda: None)})
    writer.scalars(3, {"step": 3, "loss": 1.0, "variance": 0.5, "covariance": 0.1, "dataset_mix": {"a": 6, "b": 2},
                       "dataset_weights": {"a": 0.75, "b": 0.25}})
    assert events == [(3, {"train/loss": 1.0, "train/variance": 0.5, "train/covariance": 0.1, "data/a": 6.0,
                           "data/b": 2.0, "data_weight/a": 0.75, "data_weight/b": 0.25})]

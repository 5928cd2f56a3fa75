import json
import signal
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import yaml
from fake_data import fake_cifar, fake_imagenet, fake_stl10
from test_data_idx import tiny_set

from mlx_hjepa import config as C
from mlx_hjepa.data import build_dataloader
from mlx_hjepa.weights import load_model_checkpoint
from mlx_hjepa.train import __main__ as train_cli
from mlx_hjepa.data import build_train_dataset
from mlx_hjepa.masks import MultiBlockMaskSampler
from mlx_hjepa.models import HJEPA

CONFIGS = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))
ROOT = Path(__file__).parent.parent

# A run small enough for the tests: 6x6 patch grid, 2 blocks, 4 steps per epoch.
TINY_RUN = ["model.encoder_type=vit_tiny_patch8", "model.embed_dim=64", "model.depth=2", "model.num_heads=2",
            "model.num_hierarchies=2", "model.predictor.embed_dim=32", "model.predictor.depth=1",
            "model.predictor.num_heads=2", "data.dataset=synthetic", "data.image_size=48", "data.batch_size=8",
            "data.num_workers=1", "data.samples_per_epoch=32", "training.epochs=2", "training.warmup_epochs=1",
            "logging.log_frequency=1", "evaluation.eval_frequency=0", "loss.hierarchy_weights=[1.0, 0.5]",
            "checkpoint.save_frequency=1", "checkpoint.keep_last_k=1"]
# Keys that describe this process (speed, memory, compile traces), not the training state
TIMING_KEYS = {"img_per_s", "data_wait_frac", "peak_memory_gb", "step_traces"}


def run_cli(args, capsys=None):
    code = train_cli.main([str(a) for a in args])
    out = capsys.readouterr() if capsys else None
    return code, out


def tiny_args(out_dir, *extra, config=ROOT / "configs" / "quickstart.yaml"):
    args = [config, "--output-dir", out_dir]
    for item in TINY_RUN + list(extra):
        args += ["--set", item]
    return args


def metrics(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in rec.items() if k not in TIMING_KEYS} for rec in lines]


def final_weights(run_dir):
    return {k: np.array(v) for k, v in mx.load(str(run_dir / "checkpoints" / json.loads(
        (run_dir / "checkpoints" / "latest.json").read_text())["checkpoint"] / "model.safetensors")).items()}


@pytest.fixture(scope="module")
def fake_roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    fake_imagenet(root / "imagenet")
    fake_cifar(root, "cifar10")
    fake_cifar(root, "cifar100")
    fake_stl10(root)
    tiny_set(root / "fashion-mnist")
    return root


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_builds_model_and_data(path, fake_roots):
    raw = yaml.safe_load(path.read_text())
    overrides = [f"data.data_path={fake_roots}", "data.batch_size=2", "data.num_workers=0"]
    for i, entry in enumerate(raw.get("data", {}).get("datasets") or []):
        overrides.append(f"data.datasets.{i}.path={fake_roots / 'imagenet' if 'imagenet' in entry['name'] else fake_roots}")
    if raw["data"].get("dataset") in ("imagenet", "imagenet100", "imagefolder"):
        overrides[0] = f"data.data_path={fake_roots / 'imagenet'}"
    cfg = C.load_config(path, overrides)
    model = HJEPA.from_config(C.model_config(cfg))
    masks = MultiBlockMaskSampler.from_config(cfg.masking, model.grid_size, cfg.model.num_hierarchies)(2, 0, 0)
    assert masks["targets"].shape[1] == cfg.masking.num_target_masks
    assert model.encoder.img_size == cfg.data.image_size
    assert model.num_hierarchies == cfg.model.num_hierarchies
    dataset = build_train_dataset(cfg)
    batch = next(iter(build_dataloader(dataset, 2, num_workers=0, seed=cfg.experiment.seed)))
    assert batch["image"].shape == (2, cfg.data.image_size, cfg.data.image_size, 3)
    assert batch["image"].dtype == np.uint8


def test_config_errors_reach_the_user_as_one_sentence(tmp_path, capsys):
    code, out = run_cli(tiny_args(tmp_path, "training.learning_rate=0.1"), capsys)
    assert code == 2 and "training.learning_rate" in out.err and "training.lr" in out.err
    assert "Traceback" not in out.err
    code, out = run_cli(tiny_args(tmp_path, "training.lr=-1"), capsys)
    assert code == 2 and "training.lr" in out.err
    code, out = run_cli(tiny_args(tmp_path, "data.image_size=50"), capsys)
    assert code == 2 and "data.image_size" in out.err
    assert not (tmp_path / "quickstart").exists()  # rejected before any work


def test_dry_run_prints_model_data_and_steps(tmp_path, capsys):
    code, out = run_cli(tiny_args(tmp_path) + ["--dry-run"], capsys)
    assert code == 0
    assert "GFLOP per image" in out.out and "steps per epoch: 4" in out.out and "M parameters" in out.out
    assert not (tmp_path / "quickstart").exists()


def test_resume_mid_epoch_matches_a_straight_run(tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli(tiny_args(straight), capsys)[0] == 0
    code, out = run_cli(tiny_args(split) + ["--stop-at-step", "3"], capsys)
    assert code == 0 and "stopped at step 3" in out.out
    assert json.loads((split / "quickstart" / "checkpoints" / "latest.json").read_text()) == {
        "checkpoint": "step_00000003"}
    code, out = run_cli(tiny_args(split) + ["--resume", "auto"], capsys)
    assert code == 0 and "resumed from" in out.out
    a, b = final_weights(straight / "quickstart"), final_weights(split / "quickstart")
    assert a.keys() == b.keys()
    # Threaded BLAS sums in a schedule-dependent order, and Adam turns those ~1e-7 differences in
    # tiny gradients into ~1e-6 in the weights after 8 steps (seen under load); one step more or
    # less moves weights by ~1e-3, so 1e-5 still catches any difference in what was trained.
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5, rtol=0)
    # The same lines, key for key; numbers agree to float32 round-off (threaded BLAS and LAPACK
    # sum in a schedule-dependent order, so two runs may differ in the 7th digit).
    a_metrics, b_metrics = metrics(straight / "quickstart"), metrics(split / "quickstart")
    assert len(a_metrics) == len(b_metrics) == 8
    for a_rec, b_rec in zip(a_metrics, b_metrics):
        assert a_rec.keys() == b_rec.keys()
        for key in a_rec:
            assert a_rec[key] == (pytest.approx(b_rec[key], rel=1e-5) if isinstance(a_rec[key], float)
                                  else b_rec[key]), key
    # periodic checkpoints pruned to keep_last_k=1 plus the latest, which is the same one here
    assert sorted(p.name for p in (split / "quickstart" / "checkpoints").glob("step_*")) == ["step_00000008"]
    assert (split / "quickstart" / "encoder.safetensors").is_file()


def test_existing_run_needs_resume(tmp_path, capsys):
    assert run_cli(tiny_args(tmp_path) + ["--stop-at-step", "1"], capsys)[0] == 0
    code, out = run_cli(tiny_args(tmp_path), capsys)
    assert code == 1 and "--resume auto" in out.err


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    from mlx_hjepa.train import step as step_module

    original = step_module.TrainStep.__call__

    def poisoned(self, images, masks):
        out = original(self, images, masks)
        if self.step >= 6:  # the second epoch: epoch 1 ended at step 4 with a checkpoint
            out = dict(out, loss=mx.array(float("nan")))
        return out

    monkeypatch.setattr(step_module.TrainStep, "__call__", poisoned)
    code, out = run_cli(tiny_args(tmp_path), capsys)
    assert code == 1
    assert "loss became nan at step 6" in out.err and "step_00000004" in out.err and "intact" in out.err
    run = tmp_path / "quickstart"
    assert json.loads((run / "checkpoints" / "latest.json").read_text()) == {"checkpoint": "step_00000004"}
    model = load_model_checkpoint(run / "checkpoints" / "step_00000004" / "model.safetensors")
    assert all(np.isfinite(np.array(v)).all() for v in final_weights(run).values()) and model is not None


KILL_IN_SAVE = """
import os, signal, sys
import mlx_hjepa
from mlx_hjepa import rundir
from mlx_hjepa.train import __main__ as cli
real = rundir.write_json_atomic
def write(path, data):
    if str(path).endswith("state.json") and data["step"] >= 6:
        os.kill(os.getpid(), signal.SIGKILL)  # model and optimizer files of step 6 are half-way in place
    return real(path, data)
rundir.write_json_atomic = write
sys.exit(cli.main(sys.argv[1:]))
"""


def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path, capsys):
    args = [str(a) for a in tiny_args(tmp_path, "training.epochs=3", "data.samples_per_epoch=24")]
    # 3 steps/epoch: checkpoints after steps 3 and 6; the process dies inside the second.
    proc = subprocess.run([sys.executable, "-c", KILL_IN_SAVE, *args, "--stop-at-step", "7"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpts = tmp_path / "quickstart" / "checkpoints"
    assert json.loads((ckpts / "latest.json").read_text()) == {"checkpoint": "step_00000003"}
    assert any(p.name.startswith(".step_00000006") for p in ckpts.iterdir())  # the torn write, never renamed
    load_model_checkpoint(ckpts / "step_00000003" / "model.safetensors")
    code, out = run_cli([*args, "--resume", "auto"], capsys)
    assert code == 0 and "step_00000003" in out.out
    assert json.loads((ckpts / "latest.json").read_text()) == {"checkpoint": "step_00000009"}


def test_tensorboard_optional(tmp_path, capsys):
    try:
        import tensorboard  # noqa: F401
        have = True
    except ImportError:
        have = False
    if have:
        code, _ = run_cli(tiny_args(tmp_path, "logging.use_tensorboard=true", "training.epochs=1"), capsys)
        assert code == 0 and list((tmp_path / "quickstart" / "tensorboard").glob("events.out.tfevents.*"))
    else:
        with pytest.warns(UserWarning, match="tensorboard"):
            code, _ = run_cli(tiny_args(tmp_path, "logging.use_tensorboard=true", "training.epochs=1"), capsys)
        assert code == 0 and (tmp_path / "quickstart" / "metrics.jsonl").is_file()


def test_sigterm_stops_at_a_step_boundary_with_a_checkpoint_that_resumes(tmp_path, capsys):
    args = [str(a) for a in tiny_args(tmp_path, "training.epochs=50")]
    proc = subprocess.Popen([sys.executable, "-m", "mlx_hjepa.train", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics_file = tmp_path / "quickstart" / "metrics.jsonl"
    for _ in range(600):  # wait until a few steps are logged
        if metrics_file.is_file() and len(metrics_file.read_text().splitlines()) >= 3:
            break
        proc.wait(timeout=0.1) if proc.poll() is not None else __import__("time").sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "stopped by SIGTERM at step" in err, err[-2000:]
    step = int(err.split("stopped by SIGTERM at step ")[1].split(";")[0])
    # a stop right after an epoch-end save re-saves that step under a fresh name (step_N-1)
    folder = Path(err.split("; checkpoint ")[1].split(";")[0])
    assert folder.name.startswith(f"step_{step:08d}")
    state = json.loads((folder / "state.json").read_text())
    assert state["step"] == step and state["epoch"] * 4 + state["batch"] == step
    # The checkpoint holds exactly `step` updates: the weights of a run told to stop there. One
    # update more or less moves some weight by ~1e-3 (lr 1e-3, Adam); two processes differ by
    # ~1e-5 at most (threaded BLAS sums in a schedule-dependent order).
    reference = tmp_path / "reference"
    assert run_cli(tiny_args(reference, "training.epochs=50") + ["--stop-at-step", step], capsys)[0] == 0
    a, b = final_weights(tmp_path / "quickstart"), final_weights(reference / "quickstart")
    assert max(np.abs(a[k] - b[k]).max() for k in a) < 1e-4


# ---------------------------------------------------------------- multi-dataset runs (issue 14)

def test_dry_run_of_the_multi_dataset_config_counts_stl10_train_plus_unlabeled(fake_roots, tmp_path, capsys):
    args = [ROOT / "configs" / "imagenet100_multi_dataset.yaml", "--output-dir", tmp_path, "--dry-run"]
    for item in (f"data.datasets.0.path={fake_roots / 'imagenet'}", f"data.datasets.1.path={fake_roots}",
                 f"data.datasets.2.path={fake_roots}", "device=cpu", "training.use_amp=false", "data.batch_size=2"):
        args += ["--set", item]
    code, out = run_cli(args, capsys)
    assert code == 0, out.err
    assert "stl10 (train+unlabeled): 6 images, weight 0.250" in out.out  # fake STL-10: 3 train + 3 unlabeled
    code, out = run_cli(args + ["--set", "data.sampling_strategy=concat"] +
                        [f"--set=data.datasets.{i}.weight=1" for i in range(3)], capsys)
    assert code == 0 and "stl10 (train+unlabeled): 6 images, 6 expected per epoch" in out.out
    assert not [line for line in out.out.splitlines() if line.startswith("data: ") and "weight" in line]


@pytest.mark.parametrize("extra, words", [
    (["device=gpu"], "no GPU backend"),  # m1_max_imagenet100.yaml's device on a machine without a GPU
    (["data.batch_size=64"], "too few for one batch of 64"),  # 32 images per epoch
    (["training.accumulation_steps=8"], "fewer than training.accumulation_steps (8)"),  # 4 batches per epoch
])
def test_dry_run_refuses_what_the_real_run_refuses(tmp_path, capsys, monkeypatch, extra, words):
    monkeypatch.setattr(mx, "is_available", lambda device: device == mx.cpu)
    code, out = run_cli(tiny_args(tmp_path, *extra) + ["--dry-run"], capsys)
    assert code != 0 and words in out.err and "Traceback" not in out.err
    assert not (tmp_path / "quickstart").exists()


def test_dry_run_of_the_m1_max_config_without_a_gpu(fake_roots, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mx, "is_available", lambda device: device == mx.cpu)
    code, out = run_cli([ROOT / "configs" / "m1_max_imagenet100.yaml", "--output-dir", tmp_path, "--set",
                         f"data.data_path={fake_roots / 'imagenet'}", "--dry-run"], capsys)
    assert code == 1 and "set device: cpu or auto" in out.err


def test_dry_run_warns_about_half_precision_on_the_cpu(tmp_path, capsys):
    with pytest.warns(UserWarning, match="use_amp"):
        code, _ = run_cli(tiny_args(tmp_path, "device=cpu", "training.use_amp=true") + ["--dry-run"], capsys)
    assert code == 0


MIX_RUN = ["data.dataset=null", "data.use_multi_dataset=true", "data.samples_per_epoch=32", "training.epochs=3",
           "data.datasets=[{name: synthetic, weight: 1.0}, {name: synthetic, weight: 0.0}]",
           "data.weight_schedule={1: [0.0, 1.0]}"]


def test_weight_schedule_changes_the_draws_at_its_epoch_and_survives_a_resume(tmp_path, capsys):
    assert run_cli(tiny_args(tmp_path, *MIX_RUN) + ["--stop-at-step", "6"], capsys)[0] == 0  # inside epoch 1
    code, out = run_cli(tiny_args(tmp_path, *MIX_RUN) + ["--resume", "auto"], capsys)
    assert code == 0 and "resumed from" in out.out
    records = metrics(tmp_path / "quickstart")
    assert [r["step"] for r in records] == list(range(1, 13))
    for r in records:
        new = r["epoch"] >= 1
        assert r["dataset_mix"] == {"synthetic": 0 if new else 8, "synthetic#2": 8 if new else 0}, r
        assert r["dataset_weights"] == {"synthetic": 0.0 if new else 1.0, "synthetic#2": 1.0 if new else 0.0}


def test_vicreg_terms_reach_the_metrics_and_the_progress_line(tmp_path, capsys):
    code, out = run_cli(tiny_args(tmp_path, "loss.use_vicreg=true", "training.epochs=1"), capsys)
    assert code == 0
    records = metrics(tmp_path / "quickstart")
    assert all(r["variance"] >= 0 and r["covariance"] >= 0 for r in records)
    assert " var " in out.out and " cov " in out.out
    code, out = run_cli(tiny_args(tmp_path / "plain", "loss.use_vicreg=false", "training.epochs=1"), capsys)
    assert "variance" not in metrics(tmp_path / "plain" / "quickstart")[0] and " var " not in out.out

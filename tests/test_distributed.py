"""Data-parallel training under `mlx.launch -n 2 --backend ring` on 127.0.0.1.

Each run goes through tests/distributed_driver.py: the real command line, plus a dump of
every rank's final parameters and the sample ids it read.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import mlx_hjepa  # noqa: F401  (fast BLAS before mlx.core)
import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from test_train import ROOT, TINY_RUN, metrics, run_cli

from mlx_hjepa import config as C
from mlx_hjepa.data import build_dataloader, synthetic
from mlx_hjepa.distributed import shard_rows
from mlx_hjepa.data import build_train_dataset
from mlx_hjepa.masks import MultiBlockMaskSampler
from mlx_hjepa.models import HJEPA

DRIVER = Path(__file__).parent / "distributed_driver.py"
LAUNCH = shutil.which("mlx.launch", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
B = 4  # per-rank batch; the single-process reference uses 2 * B
# linear lr scaling: the same global batch must give the same lr, whatever the world size. No VICReg:
# its variance/covariance terms are statistics of each rank's shard, like an unsynchronised BatchNorm.
DIST_RUN = [item for item in TINY_RUN if not item.startswith("data.batch_size")] + [
    "training.lr_scaling=linear", "loss.use_vicreg=false"]
# one BLAS thread per rank: two ranks with one spinning OpenBLAS thread per core each run ~10x slower here
ENV = {"SYNTHETIC_TRAIN_SIZE": "64", "MLX_ENABLE_TF32": "0", "OPENBLAS_NUM_THREADS": "1"}
TIMEOUT = 120  # a hang fails the test instead of stalling CI

pytestmark = pytest.mark.skipif(LAUNCH is None, reason="mlx.launch is not installed next to this Python")


def free_port_pair():
    """A port p with p and p + 1 free (the ring backend listens on one port per rank)."""
    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    pytest.skip("no two consecutive free TCP ports on 127.0.0.1 for the ring backend")


def train_args(out_dir, batch_size, *extra):
    args = [ROOT / "configs" / "quickstart.yaml", "--output-dir", out_dir]
    for item in DIST_RUN + [f"data.batch_size={batch_size}", *extra]:
        args += ["--set", item]
    return [str(a) for a in args]


def launch(dump_dir, args, ranks=2, env=()):
    """Run the driver under mlx.launch (ranks > 1) or as a plain process; returns (exit code, output)."""
    driver = [sys.executable, str(DRIVER), str(dump_dir), *args]
    if ranks == 1:
        command = driver
    else:
        command = [LAUNCH, "-n", str(ranks), "--backend", "ring", "--starting-port", str(free_port_pair())]
        command += [f"--env={k}={v}" for k, v in {**ENV, **dict(env)}.items()] + driver
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, **ENV, **dict(env)}, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=TIMEOUT)
    return result.returncode, result.stdout + result.stderr


def params(dump_dir, rank):
    return {k: np.array(v) for k, v in mx.load(str(dump_dir / f"params_rank{rank}.safetensors")).items()}


def seen(dump_dir, rank):
    return {int(k): v for k, v in json.loads((dump_dir / f"seen_rank{rank}.json").read_text()).items()}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The tiny run with 2 ranks x batch B, straight through."""
    root = tmp_path_factory.mktemp("two_ranks")
    code, out = launch(root / "dump", train_args(root / "runs", B))
    assert code == 0 and "Traceback" not in out, out
    return root / "dump", root / "runs" / "quickstart", out


def test_both_ranks_end_bit_identical(two_ranks):
    dump, _, out = two_ranks
    rank0, rank1 = params(dump, 0), params(dump, 1)
    assert rank0.keys() == rank1.keys() and len(rank0) > 10
    assert all(np.array_equal(rank0[k], rank1[k]) for k in rank0)
    assert "global batch 8" in out and out.count("global batch 8") == 1  # printed by rank 0 only


def test_two_ranks_match_one_process_with_twice_the_batch(two_ranks, tmp_path):
    dump, run_dir, _ = two_ranks
    code, out = launch(tmp_path / "dump", train_args(tmp_path / "runs", 2 * B), ranks=1)
    assert code == 0, out
    one, two = params(tmp_path / "dump", 0), params(dump, 0)
    assert one.keys() == two.keys()
    for k in one:
        np.testing.assert_allclose(two[k], one[k], atol=1e-5, rtol=0, err_msg=k)
    cfg = C.load_config(ROOT / "configs" / "quickstart.yaml", DIST_RUN)
    initial = dict(tree_flatten(HJEPA.from_config(C.model_config(cfg), seed=cfg.experiment.seed).parameters()))
    assert max(np.abs(one[k] - np.array(initial[k])).max() for k in one) > 1e-4  # training moved the weights
    # the same data order, the same lr (linear scaling sees the same global batch) and loss
    single, double = metrics(tmp_path / "runs" / "quickstart"), metrics(run_dir)
    assert [r["lr"] for r in single] == pytest.approx([r["lr"] for r in double], rel=1e-6)
    assert [r["loss"] for r in single] == pytest.approx([r["loss"] for r in double], abs=1e-5)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["world_size"] == 2 and record["global_batch"] == 2 * B
    assert json.loads((tmp_path / "runs" / "quickstart" / "run.json").read_text())["world_size"] == 1


def test_ranks_read_disjoint_shards_of_every_epoch(two_ranks):
    dump, _, _ = two_ranks
    a, b = seen(dump, 0), seen(dump, 1)
    assert sorted(a) == sorted(b) == [0, 1]
    for epoch in a:
        assert len(a[epoch]) == len(b[epoch]) == 16
        assert not set(a[epoch]) & set(b[epoch])


def test_each_rank_takes_its_rows_of_the_global_batch(monkeypatch):
    """Rank r's i-th sample is global position i * W + r, in the images and in the masks."""
    monkeypatch.setitem(synthetic.DEFAULT_SIZES, "train", 64)
    cfg = C.load_config(ROOT / "configs" / "quickstart.yaml", DIST_RUN + ["data.batch_size=4"])
    sampler = MultiBlockMaskSampler.from_config(cfg.masking, C.grid_size(cfg), cfg.model.num_hierarchies,
                                                cfg.experiment.seed)
    full = sampler(8, 1, 2)
    halves = [shard_rows(full, 2, rank) for rank in (0, 1)]
    for k, v in full.items():
        np.testing.assert_array_equal(halves[0][k], v[0::2])
        np.testing.assert_array_equal(halves[1][k], v[1::2])
    dataset = build_train_dataset(cfg)
    one = build_dataloader(dataset, 8, num_workers=0, seed=3)
    ranks = [build_dataloader(dataset, 4, num_workers=0, seed=3, world_size=2, rank=r) for r in (0, 1)]
    for whole, *parts in zip(one.epoch_iter(1), *(loader.epoch_iter(1) for loader in ranks)):
        for rank in (0, 1):
            np.testing.assert_array_equal(whole["index"][rank::2], parts[rank]["index"])
            np.testing.assert_array_equal(whole["image"][rank::2], parts[rank]["image"])


def test_a_dead_rank_stops_the_job_and_resume_continues_exactly(two_ranks, tmp_path):
    dump, _, _ = two_ranks
    runs = tmp_path / "runs"
    # rank 1 is SIGKILLed in epoch 1 (rank 0 checkpointed the end of epoch 0 at step 4)
    code, out = launch(tmp_path / "dead", train_args(runs, B), env={"DIE_AT_STEP": "5"})
    # rank 0 sees the lost connection first, or mlx.launch's SIGTERM; neither writes a checkpoint
    assert "rank 0 of 2 lost the connection to another process" in out or "rank 0 stopped near step" in out, out
    assert "step_00000004" in out
    assert "--resume auto" in out and "Node with rank 1 exited with code -9" in out and "Traceback" not in out
    assert not (tmp_path / "dead" / "params_rank0.safetensors").exists()
    # the same command with --resume auto ends where the straight run ended, on both ranks
    code, out = launch(tmp_path / "resumed", train_args(runs, B) + ["--resume", "auto"])
    assert code == 0 and "resumed from" in out, out
    straight, rank0, rank1 = params(dump, 0), params(tmp_path / "resumed", 0), params(tmp_path / "resumed", 1)
    assert all(np.array_equal(rank0[k], rank1[k]) for k in straight)
    for k in straight:  # as for one process, a resumed run re-traces and may differ in the last bits
        np.testing.assert_allclose(rank0[k], straight[k], atol=1e-6, rtol=0, err_msg=k)


def test_a_rank_that_stops_answering_is_ended_by_the_stall_watchdog(tmp_path):
    env = {"DIE_AT_STEP": "5", "DIE_MODE": "hang", "MLX_HJEPA_STALL_TIMEOUT": "3"}
    code, out = launch(tmp_path / "dump", train_args(tmp_path / "runs", B), env=env)
    # rank 1 hangs silently; rank 0, blocked in the gradient all-reduce, is ended by its watchdog
    assert "rank 0 of 2: no training step finished for 3 s" in out and "--resume auto" in out, out
    assert "Node with rank 0 exited with code 3" in out
    assert not (tmp_path / "dump" / "params_rank0.safetensors").exists()


def test_stall_timeout_must_be_seconds(monkeypatch):
    from mlx_hjepa.distributed import DEFAULT_STALL_TIMEOUT, stall_timeout_from_env

    monkeypatch.delenv("MLX_HJEPA_STALL_TIMEOUT", raising=False)
    assert stall_timeout_from_env() == DEFAULT_STALL_TIMEOUT
    monkeypatch.setenv("MLX_HJEPA_STALL_TIMEOUT", "0")
    assert stall_timeout_from_env() == 0
    monkeypatch.setenv("MLX_HJEPA_STALL_TIMEOUT", "ten minutes")
    with pytest.raises(ValueError, match="MLX_HJEPA_STALL_TIMEOUT"):
        stall_timeout_from_env()


def test_resume_with_another_world_size_stops_with_a_clear_message(two_ranks, capsys):
    _, run_dir, _ = two_ranks
    before = (run_dir / "run.json").read_text(), (run_dir / "config.yaml").read_text()
    code, out = run_cli(["--resume", run_dir], capsys)  # the run's own config.yaml loads
    assert code == 1
    assert "written by 2 process(es) and this run has 1" in out.err and "mlx.launch with 2 processes" in out.err
    assert "Traceback" not in out.err
    assert ((run_dir / "run.json").read_text(), (run_dir / "config.yaml").read_text()) == before


def test_vicreg_terms_are_logged_from_every_rank(tmp_path):
    # each rank's terms are statistics of its own shard; the logs carry their mean over ranks
    code, out = launch(tmp_path / "dump", train_args(tmp_path / "runs", B, "loss.use_vicreg=true", "training.epochs=1"))
    assert code == 0 and "Traceback" not in out, out
    records = metrics(tmp_path / "runs" / "quickstart")
    assert len(records) == 4 and all(r["variance"] > 0 and r["covariance"] > 0 for r in records)
    dump = tmp_path / "dump"
    assert all(np.array_equal(params(dump, 0)[k], params(dump, 1)[k]) for k in params(dump, 0))

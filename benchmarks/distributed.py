"""Data-parallel step throughput with 1 and 2 ranks on this machine, and the gradient all-reduce.

    python benchmarks/distributed.py                     # the tests' tiny model, batch 8 per rank
    python benchmarks/distributed.py --set data.image_size=96 --batch-size 16    # tiny, other overrides
    python benchmarks/distributed.py --config configs/m1_max_imagenet100.yaml --batch-size 32 --hostfile hosts.json
                                                         # a real config on two Macs (same repo path on both)

Rows: one process with batch B, one process with batch 2B (the same global batch as two
ranks), and two ranks with batch B each (`mlx.launch -n 2 --backend ring` on 127.0.0.1,
or --hostfile). Each worker times the compiled training step on fixed uint8 images and
one mask shape (the step, not data loading or retracing), then `nn.average_gradients`
alone on arrays shaped like the gradients: that is the communication each step waits
for. Each time is the fastest of several rounds. On one host both ranks share its cores,
so those rows say what the ring costs, not what two Macs gain. The last row gives each
rank cores/2 OpenBLAS threads: on Linux, two ranks that each start one BLAS thread per
core oversubscribe the CPU, and OpenBLAS's spinning threads slow both down many times
(Macs use Accelerate and the GPU, not OpenBLAS).
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parent.parent
# the tiny model of tests/test_train.py (6x6 patch grid, 2 blocks)
TINY = ["model.encoder_type=vit_tiny_patch8", "model.embed_dim=64", "model.depth=2", "model.num_heads=2",
        "model.num_hierarchies=2", "model.predictor.embed_dim=32", "model.predictor.depth=1",
        "model.predictor.num_heads=2", "data.dataset=synthetic", "data.image_size=48",
        "loss.hierarchy_weights=[1.0, 0.5]"]
RESULT = "RESULT "


def worker(args):
    import mlx_hjepa  # noqa: F401  (fast BLAS before mlx.core)
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np
    from mlx.utils import tree_flatten, tree_map

    from mlx_hjepa import config as C
    from mlx_hjepa.distributed import init_distributed, shard_rows
    from mlx_hjepa.masks import MultiBlockMaskSampler
    from mlx_hjepa.models import HJEPA
    from mlx_hjepa.devices import select_device
    from mlx_hjepa.train.schedules import Schedules
    from mlx_hjepa.train.step import StepOptions, TrainStep

    group = init_distributed()
    world, rank = (group.size(), group.rank()) if group else (1, 0)
    base = TINY if args.config is None else []
    cfg = C.load_config(args.config or ROOT / "configs" / "quickstart.yaml",
                        base + args.set + [f"data.batch_size={args.batch_size}"])
    select_device(cfg)
    model = HJEPA.from_config(C.model_config(cfg), seed=cfg.experiment.seed)
    sampler = MultiBlockMaskSampler.from_config(cfg.masking, model.grid_size, cfg.model.num_hierarchies)
    step = TrainStep(model, Schedules.from_config(cfg, 100, world), StepOptions.from_config(cfg), group=group)
    B, S = cfg.data.batch_size, cfg.data.image_size
    images = np.random.default_rng(rank).integers(0, 256, (B, S, S, 3), dtype=np.uint8)
    masks = shard_rows(sampler(B * world, 0, 0), world, rank)  # one mask shape: the step, not retracing

    def per_call(fn):
        """Seconds per call: the fastest of `rounds` rounds of `steps` calls (robust on a shared machine)."""
        for _ in range(args.warmup):
            mx.eval(fn())
        rounds = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for _ in range(args.steps):
                mx.eval(fn())  # a sync per step, as the trainer's loss read does
            rounds.append((time.perf_counter() - start) / args.steps)
        return min(rounds)

    step_s = per_call(lambda: step(images, masks))
    grads = tree_map(mx.zeros_like, model.trainable_parameters())
    reduce_s = per_call(lambda: nn.average_gradients(grads, group=group)) if group else 0.0
    grad_mb = sum(g.nbytes for _, g in tree_flatten(grads)) / 2**20
    if rank == 0:
        print(RESULT + json.dumps({"world": world, "batch": B, "step_s": step_s, "reduce_s": reduce_s,
                                   "grad_mb": grad_mb}), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command, env=None):
    out = subprocess.run(command, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900,
                         env={**os.environ, **(env or {})})
    lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT)]
    if not lines:
        sys.exit(f"error: {' '.join(command[:4])} ... gave no result:\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[-1][len(RESULT):])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=8, help="per rank (default 8)")
    ap.add_argument("--steps", type=int, default=10, help="steps per timed round (default 10)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds; the fastest counts (default 5)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--config", help="YAML config to time (default: quickstart with the tests' tiny model)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    ap.add_argument("--hostfile", help="mlx.launch hostfile for the 2-rank rows (default: -n 2 on 127.0.0.1)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    launch = shutil.which("mlx.launch", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if launch is None:
        sys.exit("error: mlx.launch not found next to this Python; install mlx (it ships the launcher).")
    common = [str(Path(__file__).resolve()), "--worker", "--steps", str(args.steps), "--rounds", str(args.rounds),
              "--warmup", str(args.warmup)]
    common += [f"--set={item}" for item in args.set]
    common += [f"--config={Path(args.config).resolve()}"] if args.config else []
    B = args.batch_size
    if args.hostfile:
        two_ranks = [launch, "--hostfile", args.hostfile]
    else:
        two_ranks = [launch, "-n", "2", "--backend", "ring", "--starting-port", str(free_port())]
    results = [("default", run([sys.executable, *common, "--batch-size", str(B)])),
               ("default", run([sys.executable, *common, "--batch-size", str(2 * B)])),
               ("default", run([*two_ranks, sys.executable, *common, "--batch-size", str(B)]))]
    if not args.hostfile:  # two ranks on one host: split the cores between them
        threads = max(1, (os.cpu_count() or 2) // 2)
        results.append((f"OPENBLAS_NUM_THREADS={threads}", run(
            [*two_ranks, f"--env=OPENBLAS_NUM_THREADS={threads}", sys.executable, *common, "--batch-size", str(B)],
            env={"OPENBLAS_NUM_THREADS": str(threads)})))
    same_global = results[1][1]["batch"] / results[1][1]["step_s"]
    rows = []
    for threads_note, r in results:
        global_batch = r["batch"] * r["world"]
        ips = global_batch / r["step_s"]
        reduce = f"{r['reduce_s'] * 1e3:.2f} ({r['reduce_s'] / r['step_s']:.0%})" if r["world"] > 1 else "-"
        speedup = f"{ips / same_global:.2f}x" if global_batch == 2 * B else "-"
        rows.append([r["world"], threads_note, r["batch"], global_batch, f"{r['step_s'] * 1e3:.1f}", f"{ips:.0f}",
                     reduce, f"{r['grad_mb']:.2f}", speedup])
    from common import print_table

    what = args.config or "tiny config"
    overrides = " ".join(args.set) or "none"
    where = f"mlx.launch --hostfile {args.hostfile}" if args.hostfile else "ring backend on 127.0.0.1"
    print_table(f"Data-parallel training step, {what} (overrides: {overrides}); {where}",
                ["ranks", "BLAS threads", "batch/rank", "global batch", "step ms", "img/s",
                 "all-reduce ms/step (share)", "gradients MB", "vs 1 process, same global batch"], rows)


if __name__ == "__main__":
    main()

"""Throughput of the full H-JEPA step (context + target + predictor + update + EMA).

    python benchmarks/train_step.py            # tiny/small x 96/224, batch 32
    python benchmarks/train_step.py --quick    # ViT-T/16 @96 only, under a minute
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_model, print_table  # noqa: E402

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from mlx_hjepa.masks import MultiBlockMaskSampler  # noqa: E402
from mlx_hjepa.models import step_flops  # noqa: E402
from mlx_hjepa.train.schedules import Schedules  # noqa: E402
from mlx_hjepa.train.step import StepOptions, TrainStep  # noqa: E402


def bench(name, img_size, batch, steps, warmup):
    model = bench_model(name, img_size, act="auto")  # the config's default activation
    steps_total = warmup + steps
    sched = Schedules(1e-3, 2e-4, 1e-6, 10, 1000, 0.04, 0.4, 0.996, 1.0, 1000)
    step = TrainStep(model, sched, StepOptions(hierarchy_weights=(1.0, 0.5, 0.25)[: model.num_hierarchies]))
    sampler = MultiBlockMaskSampler(model.grid_size, num_hierarchies=model.num_hierarchies)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, img_size, img_size, 3), dtype=np.uint8)
    masks = sampler(batch, 0, 0)  # one mask shape: measure steady state, not retracing
    mx.reset_peak_memory()
    for i in range(steps_total):
        if i == warmup:
            mx.synchronize()
            start = time.perf_counter()
        mx.eval(step(images, masks))
    mx.synchronize()
    elapsed = time.perf_counter() - start
    ips = batch * steps / elapsed
    flops = step_flops(model.config(), masks["context"].shape[1], *masks["targets"].shape[1:])
    return [name, img_size, batch, f"{ips:.2f}", f"{elapsed / steps * 1000:.0f}",
            f"{mx.get_peak_memory() / 2**30:.2f}", f"{flops / 1e9:.2f}", f"{flops * ips / 1e9:.1f}"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only ViT-T/16 @96 (under a minute)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    rows_spec = [("vit_tiny", 96)] if args.quick else [("vit_tiny", 96), ("vit_tiny", 224), ("vit_small", 96),
                                                       ("vit_small", 224)]
    rows = [bench(n, s, args.batch, args.steps, args.warmup) for n, s in rows_spec]
    print_table("H-JEPA train step (fp32, compiled; predictor min(384, width) x 6, 3 levels (2 at 96 px))",
                ["model", "img", "batch", "img/s", "ms/step", "peak GiB", "GFLOP/img", "GFLOP/s"], rows)


if __name__ == "__main__":
    main()

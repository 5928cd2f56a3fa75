"""Run mlx-hjepa's compiled training step in a loop, for a sampling profiler to look at.

The step and model are vs_peers.py's (`mlx_step`: the default config at that row's encoder, image
size and predictor, with the train command's memory setting); `--ijepa-masks` uses the mask sizes
FAIR I-JEPA's collator draws (vs_peers' mlx_ijm). One typical batch of masks (the median context
length of 21 draws) is reused, so no step retraces. Prints ms/step; run it under `perf`:

    OPENBLAS_NUM_THREADS=1 perf record -F 2000 -g -o /tmp/step.perf python benchmarks/profile_step.py --ijepa-masks
    perf report -i /tmp/step.perf --no-children -g none --sort dso,symbol

(`apt-get install linux-perf`). MLX's fused CPU kernels appear as lib<graph name>.so, named after
the ops they fuse (e.g. ...Sqrt...Divide... is AdamW's update); OpenBLAS's sgemm_* are the matmuls.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mlx_hjepa  # noqa: E402,F401  (first: preloads the BLAS)
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from vs_peers import IJEPA_MASKS, ROWS, mlx_step  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--row", choices=list(ROWS), default="tiny96")
    ap.add_argument("--ijepa-masks", action="store_true", help="I-JEPA's effective mask sizes (vs_peers' mlx_ijm)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--set", action="append", default=[], help="extra config overrides, KEY=VALUE")
    args = ap.parse_args(argv)

    size = ROWS[args.row][3]
    model, step, sampler = mlx_step(args.row, args.batch,
                                    (IJEPA_MASKS[args.row] if args.ijepa_masks else []) + args.set)
    images = np.random.default_rng(0).integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
    draws = [sampler(args.batch, 0, i) for i in range(21)]  # a typical batch: the median context length
    masks = sorted(draws, key=lambda m: m["context"].shape[1])[10]
    for _ in range(3):
        mx.eval(step(images, masks))
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        mx.eval(step(images, masks))
        steps += 1
    elapsed = time.perf_counter() - start
    print(f"{args.row}{' (I-JEPA masks)' if args.ijepa_masks else ''}: {1e3 * elapsed / steps:.1f} ms/step over "
          f"{steps} steps; context tokens {masks['context'].shape[1]}, targets {masks['targets'].shape[1:]}; "
          f"activation {model.encoder.act}; traces {step.trace_count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""python -m mlx_hjepa.report RUN_DIR [--dataset NAME --data-path DIR --split SPLIT] [--out DIR]"""

import argparse
import sys
import time

from .._jit import use_jit_flags
from .._malloc import keep_freed_memory
from ..errors import add_debug_flag, run_command
from .build import write_report


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m mlx_hjepa.report",
                                 description="Write a static HTML report of a training run: masks, attention, "
                                             "feature maps, nearest neighbours, curves and a summary.")
    ap.add_argument("run_dir", help="run directory written by mlx_hjepa.train")
    ap.add_argument("--dataset", help="labelled dataset for attention, feature maps and neighbours "
                                      "(default: the run's k-NN dataset)")
    ap.add_argument("--data-path", help="its root (default: the run's data.data_path)")
    ap.add_argument("--split", help="split the query images come from (default: the dataset's val/test split)")
    ap.add_argument("--out", help="output folder (default: RUN_DIR/report)")
    add_debug_flag(ap)
    return ap.parse_args(argv)


def report(args):
    start = time.process_time()
    index = write_report(args.run_dir, args.out, args.dataset, args.data_path, args.split,
                         log=lambda m: print(m, file=sys.stderr))
    print(f"report: {index} ({time.process_time() - start:.1f} s CPU)")
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()  # MLX's CPU backend re-faults every freed buffer otherwise (_malloc.py)
    use_jit_flags()  # lets GCC vectorise MLX's fused CPU kernels that select (_jit.py)
    return run_command(lambda: report(args), args)


if __name__ == "__main__":
    sys.exit(main())

"""python -m mlx_hjepa.report RUN_DIR [--dataset NAME --data-path DIR --split SPLIT] [--out DIR]"""

import argparse
import sys
import time


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
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import mlx_hjepa  # noqa: F401  (fast BLAS before mlx.core)
    from .. import config as C
    from .build import write_report

    start = time.process_time()
    try:
        index = write_report(args.run_dir, args.out, args.dataset, args.data_path, args.split,
                             log=lambda m: print(m, file=sys.stderr))
    except (C.ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {index} ({time.process_time() - start:.1f} s CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The PyTorch ImageNet-100 integration's data script, as a thin front for `python -m mlx_hjepa.data`.

    python scripts/download_data.py --dataset cifar10                 # download and check ./data/cifar-10-batches-py
    python scripts/download_data.py --dataset stl10 --data-path /data # the same under /data
    python scripts/download_data.py --dataset imagenet100 --verify-only --data-path ./data/imagenet

--data-path is the folder that holds the CIFAR/STL-10 folders (default ./data), or the ImageNet
root holding train/ and val/ (default ./data/imagenet). ImageNet cannot be downloaded by a
script; without --verify-only this says how to get it (see scripts/download_imagenet100.sh).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mlx_hjepa, installed or not

from mlx_hjepa.data.__main__ import main as data_main  # noqa: E402
from mlx_hjepa.data.verify import DATASETS  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(prog="scripts/download_data.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="dataset to get and check")
    parser.add_argument("--data-path", help="where the dataset lives (default ./data, ./data/imagenet for ImageNet)")
    parser.add_argument("--verify-only", action="store_true", help="only check what is on disk")
    args = parser.parse_args(argv)
    root = args.data_path or ("./data/imagenet" if args.dataset in ("imagenet", "imagenet100") else "./data")
    if not args.verify_only:
        code = data_main(["download", args.dataset, "--root", root])
        if code != 0:
            return code
    return data_main(["verify", args.dataset, "--root", root])


if __name__ == "__main__":
    sys.exit(main())

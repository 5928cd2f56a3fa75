"""`python -m mlx_hjepa.data` (also `hjepa-data`): download, prepare, verify and summarise datasets.

    python -m mlx_hjepa.data download cifar10 --root ./data
    python -m mlx_hjepa.data download fashion_mnist --root ./data
    python -m mlx_hjepa.data prepare-imagenet-val --root ./data/imagenet --devkit ILSVRC2012_devkit_t12.tar.gz
    python -m mlx_hjepa.data verify imagenet100 --root ./data/imagenet
    python -m mlx_hjepa.data stats configs/imagenet100_multi_dataset.yaml
"""

import argparse
import dataclasses
import sys
from pathlib import Path

from ..config import load_config
from ..errors import add_debug_flag, run_command
from ..rules import FOLDER_DATASETS
from .build import build_dataset, build_multi_dataset, build_train_dataset
from .download import ARCHIVES, DOWNLOADABLE, DownloadError, download_dataset, not_downloadable
from .imagenet_val import PrepareError, prepare_imagenet_val
from .verify import DATASETS, print_report, verify_dataset

# Errors a user can fix from the message alone: printed as one sentence, no traceback.
# ValueError covers the config's ConfigError and the loaders' bad-argument errors.
USER_ERRORS = (DownloadError, PrepareError, FileNotFoundError, NotADirectoryError, PermissionError, ValueError)


def _download(args):
    if args.name not in ARCHIVES:  # ImageNet: one sentence saying how to get it
        raise DownloadError(not_downloadable(args.name, args.root or "./data/imagenet"))
    if args.root is None:
        raise DownloadError(f"pass --root, the folder to hold {args.name} (e.g. --root ./data).")
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(args.name, total=None)
        folder = download_dataset(
            args.name, args.root, url=args.url, md5=args.md5, keep_archive=args.keep_archive,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    print(f"{args.name} is ready in {folder}")
    return 0


def _prepare_imagenet_val(args):
    prepare_imagenet_val(args.root, args.devkit, mapping=args.mapping)
    return 0


def _parse_counts(items):
    counts = {}
    for item in items or []:
        split, _, number = item.partition("=")
        if not number.isdigit():
            raise ValueError(f"--counts takes SPLIT=NUMBER (e.g. val=5000), not {item!r}.")
        counts[split] = int(number)
    return counts


def _verify(args):
    checks = verify_dataset(args.name, args.root, counts=_parse_counts(args.counts), class_list=args.class_list,
                            sample=args.sample, seed=args.seed, min_free_gb=args.min_free_gb)
    return 0 if print_report(args.name, args.root, checks) else 1


def _stats(args):
    from rich.console import Console
    from rich.table import Table

    cfg = load_config(args.config, overrides=args.set or ())  # same keys, legacy names and checks as training
    data = cfg.data

    if args.split is None:  # what training reads: each source's configured or pretraining split
        dataset = build_train_dataset(cfg)
    elif data.use_multi_dataset:
        entries = [{k: v for k, v in dataclasses.asdict(d).items() if v is not None and k != "split"}
                   for d in data.datasets]
        extra = {"samples_per_epoch": data.samples_per_epoch} if data.samples_per_epoch else {}
        dataset = build_multi_dataset(dataset_configs=entries, data_path=data.data_path, split=args.split,
                                      sampling_strategy=data.sampling_strategy, image_size=data.image_size, **extra)
    else:
        dataset = build_dataset(dataset_name=data.dataset, data_path=data.data_path, split=args.split,
                                image_size=data.image_size, class_list=data.class_list)
    if hasattr(dataset, "get_dataset_stats"):
        stats, strategy = dataset.get_dataset_stats(args.epoch), data.sampling_strategy
    else:
        stats = {dataset.name: {"size": len(dataset), "split": getattr(dataset, "split", None), "weight": None,
                                "expected_samples_per_epoch": len(dataset)}}
        strategy = "one dataset"
    split = args.split or "training"
    table = Table(title=f"{args.config}: {split} split, {strategy}, epoch {args.epoch}")
    for column in ("dataset", "split", "size", "weight", "expected samples / epoch"):
        table.add_column(column, justify="left" if column in ("dataset", "split") else "right")
    for name, s in stats.items():
        weight = "-" if s["weight"] is None else f"{s['weight']:.3f}"
        table.add_row(name, str(s.get("split") or ""), f"{s['size']:,}", weight, f"{s['expected_samples_per_epoch']:,}")
    table.add_row("total", "", f"{sum(s['size'] for s in stats.values()):,}", "",
                  f"{sum(s['expected_samples_per_epoch'] for s in stats.values()):,}", style="bold")
    Console().print(table)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m mlx_hjepa.data", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("download", help="download and unpack CIFAR-10, CIFAR-100, STL-10, Fashion-MNIST or MNIST",
                            description="Download an official archive (resumable, MD5-checked) and unpack it under --root "
                                        "(fashion_mnist, mnist: the four IDX files into ROOT/fashion-mnist/, ROOT/mnist/). "
                                        "ImageNet cannot be downloaded by a script: see scripts/download_imagenet100.sh.")
    p.add_argument("name", choices=sorted(DOWNLOADABLE) + list(FOLDER_DATASETS),
                   help="dataset to download (imagenet and imagenet100 say how to get them)")
    p.add_argument("--root", type=Path, help="folder to hold the dataset (e.g. ./data); required")
    p.add_argument("--keep-archive", action="store_true", help="keep the .tar.gz after unpacking")
    p.add_argument("--url", help="download from this mirror instead of the official URL (fashion_mnist, mnist: its folder)")
    p.add_argument("--md5", help="expected MD5 of the archive at --url (default: the official one)")
    p.set_defaults(run=_download)

    p = commands.add_parser("prepare-imagenet-val", help="sort the flat ILSVRC2012 val images into val/<wnid>/",
                            description="Move ROOT/val/ILSVRC2012_val_*.JPEG into ROOT/val/<wnid>/ using the devkit ground truth. "
                                        "Safe to run again.")
    p.add_argument("--root", required=True, type=Path, help="ImageNet folder that holds val/")
    p.add_argument("--devkit", required=True, type=Path, help="ILSVRC2012_devkit_t12.tar.gz or its extracted folder")
    p.add_argument("--mapping", type=Path,
                   help="text file mapping ILSVRC2012_ID to wnid, used instead of the devkit's meta.mat: 'id wnid' per line, "
                        "or one wnid per line where line N is ILSVRC2012_ID N (the devkit's order, not sorted wnid order)")
    p.set_defaults(run=_prepare_imagenet_val)

    p = commands.add_parser("verify", help="check a dataset's layout, classes, counts, free space and decodes",
                            description="Check a dataset on disk; exits 1 and says how to fix it when something is wrong.")
    p.add_argument("name", choices=DATASETS, help="dataset to check")
    p.add_argument("--root", required=True, type=Path,
                   help="ImageNet folder with train/ and val/, or the folder holding cifar-10-batches-py/, cifar-100-python/, stl10_binary/")
    p.add_argument("--counts", nargs="+", metavar="SPLIT=N", help="expected image counts instead of the official ones (custom subsets)")
    p.add_argument("--class-list", type=Path, help="file of wnids to use instead of the built-in ImageNet-100 (CMC) list")
    p.add_argument("--sample", type=int, default=200, help="number of random images to decode (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the decode sample")
    p.add_argument("--min-free-gb", type=float, default=10.0, help="warn below this much free disk space (default 10)")
    p.set_defaults(run=_verify)

    p = commands.add_parser("stats", help="sizes, weights and samples per epoch of a config's data mix",
                            description="Build a config's datasets and print each one's size, weight and expected samples per epoch.")
    p.add_argument("config", type=Path, help="YAML config")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a config value, e.g. data.data_path=/data (repeatable)")
    p.add_argument("--split", help="split to summarise (default: the splits training reads, e.g. STL-10's "
                                    "train+unlabeled)")
    p.add_argument("--epoch", type=int, default=0, help="epoch whose weights to show (data.weight_schedule)")
    p.set_defaults(run=_stats)
    for command in commands.choices.values():
        add_debug_flag(command)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return run_command(lambda: args.run(args), args, value_error_code=1, user_errors=USER_ERRORS)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue where it stopped.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate a trained encoder: k-NN and linear probe on frozen features.

    python -m mlx_hjepa.eval RUN_DIR --dataset cifar10 --data-path ./data --protocol knn,linear
    python -m mlx_hjepa.eval encoder.safetensors --dataset synthetic --random-init
    python -m mlx_hjepa.eval RUN_DIR --dataset fashion_mnist --data-path DIR --baselines

With --baselines, eval.json also holds "baselines": the random-init encoder and the raw
pixels under the same protocol and split.

Writes eval.json (eval_random_init.json with --random-init) next to the weights: the run
directory, the checkpoint folder, or the folder holding the .safetensors file.
"""

import argparse
import sys
import warnings
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..data import JEPAEvalTransform, build_dataset
from .._jit import use_jit_flags
from .._malloc import keep_freed_memory
from ..errors import add_debug_flag, run_command
from ..rules import EVAL_SPLITS
from ..weights import write_json_atomic
from .baselines import NAMES as BASELINES
from .baselines import baseline_features
from .features import (extract_features, load_eval_encoder, random_encoder_like, training_crop_fraction, training_seed,
                       with_image_size)
from .knn import WEIGHTINGS, knn_classify
from .linear_probe import linear_probe

PROTOCOLS = ("knn", "linear")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m mlx_hjepa.eval",
        description="k-NN and linear-probe accuracy of a frozen encoder (target encoder by default).")
    parser.add_argument("weights", help="run directory, checkpoint folder (checkpoints/step_N) or .safetensors file")
    parser.add_argument("--dataset", required=True, choices=sorted(EVAL_SPLITS), help="evaluation dataset")
    parser.add_argument("--data-path", default="./data", help="dataset root (ignored for synthetic)")
    parser.add_argument("--protocol", default="knn,linear", help="comma-separated: knn, linear (default: both)")
    parser.add_argument("--random-init", action="store_true",
                        help="evaluate a freshly initialised encoder of the same shape (the baseline)")
    parser.add_argument("--baselines", action="store_true",
                        help="also evaluate the random-init encoder and the raw pixels with the same protocol")
    parser.add_argument("--which", choices=["target", "context"], default="target",
                        help="which encoder of a run or checkpoint (default: target)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for --random-init and the probe (default: the run's experiment.seed, else 0)")
    parser.add_argument("--image-size", type=int, default=None, help="eval resolution (default: the encoder's)")
    parser.add_argument("--crop-fraction", type=float, default=None,
                        help="eval transform: resize to image size / this, then centre crop (default: the run's "
                             "evaluation.crop_fraction, else 0.875; 1.0 reads the whole image)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    parser.add_argument("--num-workers", type=int, default=4, help="data loading threads")
    parser.add_argument("--num-layers", type=int, default=1,
                        help="concatenate the pooled outputs of the last N blocks (default: 1, the final output)")
    parser.add_argument("--k", type=int, default=20, help="k-NN neighbours")
    parser.add_argument("--temperature", type=float, default=0.07, help="k-NN vote temperature")
    parser.add_argument("--weighting", choices=WEIGHTINGS, default="exp", help="k-NN votes: exp(sim/T) or majority")
    parser.add_argument("--epochs", type=int, default=100, help="linear-probe epochs")
    parser.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra dataset argument for both splits, e.g. num_samples=500 or resolution=32 "
                             "(synthetic), class_list=FILE (imagenet, imagenet100, imagefolder)")
    parser.add_argument("--class-list", metavar="FILE",
                        help="imagenet, imagenet100, imagefolder: evaluate on the classes listed in FILE (one a line)")
    parser.add_argument("--cache-dir", default=None,
                        help="feature cache folder (default: feature_cache/ beside the output)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write cached features")
    parser.add_argument("--out", default=None, help="output JSON path (default: eval.json beside the weights)")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def parse_protocols(text):
    protocols = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown or not protocols:
        raise ValueError(f"--protocol {text!r} is not a comma-separated list of {', '.join(PROTOCOLS)}.")
    return protocols


def parse_dataset_options(items):
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--dataset-option {item!r} is not KEY=VALUE (e.g. num_samples=500).")
        options[key.strip()] = yaml.safe_load(value)
    return options


def eval_crop_fraction(given, training_config):
    """--crop-fraction if given, else the run's evaluation.crop_fraction, else the default 0.875."""
    if given is None:
        given = training_crop_fraction(training_config)
    if not 0 < given <= 1:
        raise ValueError(f"--crop-fraction is {given}; use a fraction in (0, 1], e.g. 0.875 or 1.0 (the whole image).")
    return float(given)


def output_dir(weights_arg, weights_file):
    source = Path(weights_arg)
    return source if source.is_dir() else Path(weights_file).parent


def run(args, console):
    protocols = parse_protocols(args.protocol)
    options = parse_dataset_options(args.dataset_option)
    if args.class_list:
        options["class_list"] = args.class_list
    encoder, weights_file, training_config = load_eval_encoder(args.weights, args.which)
    seed = args.seed if args.seed is not None else training_seed(training_config)
    if args.dataset == "synthetic" and training_config is not None:
        options.setdefault("seed", training_seed(training_config))  # the images the run's own k-NN saw
    if args.random_init:
        encoder = random_encoder_like(encoder, seed)
    encoder = with_image_size(encoder, args.image_size)
    out_dir = output_dir(args.weights, weights_file)
    out_file = Path(args.out) if args.out else out_dir / ("eval_random_init.json" if args.random_init else "eval.json")
    cache_dir = None if args.no_cache else Path(args.cache_dir or out_file.parent / "feature_cache")

    crop_fraction = eval_crop_fraction(args.crop_fraction, training_config)
    transform = JEPAEvalTransform(encoder.img_size, crop_fraction)
    train_split, test_split = EVAL_SPLITS[args.dataset]
    splits, datasets = {}, {}
    for split in (train_split, test_split):
        dataset = datasets[split] = build_dataset(args.dataset, args.data_path, split, image_size=encoder.img_size,
                                                  transform=transform, **options)
        with Progress(TextColumn(f"features {args.dataset}/{split}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeRemainingColumn(), console=console, transient=True) as bar:
            task = bar.add_task("", total=len(dataset))
            splits[split] = extract_features(encoder, dataset, args.batch_size, args.num_layers,
                                             cache_dir=cache_dir, num_workers=args.num_workers,
                                             progress=lambda done, total: bar.update(task, completed=done))
        num_classes = getattr(dataset, "num_classes", 0)
    (_, train_y), (_, test_y) = splits[train_split], splits[test_split]
    num_classes = max(num_classes, int(max(train_y.max(), test_y.max())) + 1)

    result = {"dataset": args.dataset, "weights": str(weights_file), "image_size": encoder.img_size,
              "crop_fraction": crop_fraction}
    result_protocols, details = evaluate_protocols(args, protocols, splits[train_split], splits[test_split], num_classes, seed)
    result.update(result_protocols)
    if args.baselines:
        result["baselines"] = evaluate_baselines(args, protocols, encoder, datasets, cache_dir, num_classes, seed, console)

    write_json_atomic(out_file, result)
    print_table(console, args, result, details, len(train_y), len(test_y), train_split, test_split)
    if args.baselines:
        print_baselines(console, result)
    console.print(f"Wrote {out_file.resolve()}")
    return result


def evaluate_protocols(args, protocols, train, test, num_classes, seed):
    """({"knn": ..., "linear": ...} as written to eval.json, full results for the table)."""
    (train_x, train_y), (test_x, test_y) = train, test
    result, details = {}, {}
    if "knn" in protocols:
        knn = knn_classify(train_x, train_y, test_x, test_y, k=args.k, temperature=args.temperature,
                           num_classes=num_classes, weighting=args.weighting)
        result["knn"] = {key: knn[key] for key in ("top1", "top5", "k", "temperature")}
        details["knn"] = knn
    if "linear" in protocols:
        linear = linear_probe(train_x, train_y, test_x, test_y, epochs=args.epochs, seed=seed,
                              num_classes=num_classes)
        result["linear"] = {key: linear[key] for key in ("top1", "top5", "lr", "weight_decay")}
        details["linear"] = linear
    return result, details


def evaluate_baselines(args, protocols, encoder, datasets, cache_dir, num_classes, seed, console):
    """{baseline name: {"knn": ..., "linear": ...}} for the random-init encoder and the raw pixels."""
    results = {}
    for name in BASELINES:
        features = []
        for split, dataset in datasets.items():
            with Progress(TextColumn(f"{name} features {args.dataset}/{split}"), BarColumn(),
                          TextColumn("{task.completed}/{task.total}"), console=console, transient=True) as bar:
                task = bar.add_task("", total=len(dataset))
                features.append(baseline_features(name, encoder, dataset, seed, args.num_layers, args.batch_size,
                                                   cache_dir, args.num_workers,
                                                   progress=lambda done, total: bar.update(task, completed=done)))
        results[name], _ = evaluate_protocols(args, protocols, *features, num_classes, seed)
    return results


def print_baselines(console, result):
    table = Table(title="top-1 (%) beside the floors, same protocol and split")
    for column in ("protocol", "trained", "random init", "raw pixels"):
        table.add_column(column, justify="left" if column == "protocol" else "right")
    for protocol in PROTOCOLS:
        if protocol in result:
            row = [result[protocol]] + [result["baselines"][name][protocol] for name in BASELINES]
            table.add_row({"knn": "k-NN", "linear": "linear"}[protocol], *(f"{100 * r['top1']:.2f}" for r in row))
    console.print(table)


def print_table(console, args, result, details, num_train, num_test, train_split, test_split):
    encoder_name = "random-init" if args.random_init else f"{args.which} encoder"
    table = Table(title=f"{args.dataset} ({train_split} {num_train} -> {test_split} {num_test}), {encoder_name}, "
                        f"{result['weights']}")
    for column in ("protocol", "top-1", "top-5", "settings"):
        table.add_column(column, justify="right" if column.startswith("top") else "left")
    if "knn" in details:
        knn = details["knn"]
        table.add_row("k-NN", f"{100 * knn['top1']:.2f}", f"{100 * knn['top5']:.2f}",
                      f"k={knn['k']}, T={knn['temperature']:g}, {knn['weighting']} votes")
    if "linear" in details:
        linear = details["linear"]
        table.add_row("linear", f"{100 * linear['top1']:.2f}", f"{100 * linear['top5']:.2f}",
                      f"lr={linear['lr']:g}, wd={linear['weight_decay']:g}, {linear['epochs']} epochs")
    console.print(table)


def _command(args, console):
    run(args, console)
    return 0


def main(argv=None):
    args = parse_args(argv)
    keep_freed_memory()  # MLX's CPU backend re-faults every freed buffer otherwise (_malloc.py)
    use_jit_flags()  # lets GCC vectorise MLX's fused CPU kernels that select (_jit.py)
    console = Console(stderr=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = run_command(lambda: _command(args, console), args, prefix="hjepa-eval:", value_error_code=1)
    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)):
        console.print(f"[yellow]warning:[/yellow] {message}")
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The small-image study's diagnostics and table (docs/small_images.md).

    python benchmarks/small_images.py floor RUN_DIR [RUN_DIR ...]
    python benchmarks/small_images.py table RUN_DIR [RUN_DIR ...]

floor: the position-only floor of each run's final target encoder: the loss a predictor
gets when it outputs, for every target position, the mean over images of the layer-normed
target at that position (so it knows where a patch is, nothing about the image). A
training loss far below the floor means the predictor reads the context; a loss at or above
it means it learned only positions. Also the loss of predicting zero, and the floor of the
same encoder at its random initialisation. Measured on 2,000 test images, level 0 and 1.

table: one markdown row per run from its run.json/config.yaml, metrics.jsonl (CPU time of
training, final losses, effective rank, target std) and eval.json (written by
`python -m mlx_hjepa.eval RUN_DIR --dataset fashion_mnist --data-path DIR --baselines`).
"""

import argparse
import json
import sys
from pathlib import Path

import mlx_hjepa  # noqa: F401  (first: preloads the BLAS)
import mlx.core as mx
import numpy as np
import yaml

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def level_tokens(encoder, images, level):
    from mlx_hjepa.objective import layer_norm, pool_grid
    from mlx_hjepa.train.step import normalize_images

    out = []
    for start in range(0, len(images), 250):
        tokens = encoder(normalize_images(mx.array(images[start:start + 250])))
        out.append(np.array(layer_norm(pool_grid(tokens, encoder.grid_size, 2 ** level))))
    return np.concatenate(out)


def smooth_l1(diff):
    a = np.abs(diff)
    return np.where(a < 1, 0.5 * diff * diff, a - 0.5).mean()


def floors(encoder, images, levels):
    result = {}
    for level in range(levels):
        tokens = level_tokens(encoder, images, level)
        result[f"floor_level{level}"] = float(smooth_l1(tokens - tokens.mean(axis=0, keepdims=True)))
        result[f"zero_level{level}"] = float(smooth_l1(tokens))
    return result


def final_metrics(run_dir):
    lines = [json.loads(line) for line in open(Path(run_dir) / "metrics.jsonl")]
    steps = [m for m in lines if "loss" in m and "event" not in m]
    tail = steps[-5:]
    return {key: float(np.mean([m[key] for m in tail if key in m])) for key in
            ("loss", "loss_level0", "loss_level1", "effective_rank", "target_std") if any(key in m for m in tail)}


def floor(args):
    from mlx_hjepa.data.idx import load_idx
    from mlx_hjepa.eval.features import load_eval_encoder, random_encoder_like

    images = load_idx("fashion_mnist", args.data_path, "test")[0][:2000]
    for run_dir in args.runs:
        encoder, _, config = load_eval_encoder(run_dir, "target")
        levels = config["model"]["num_hierarchies"] if config else 1
        row = {"run": str(run_dir), **final_metrics(run_dir),
               "trained": floors(encoder, images, levels),
               "random_init": floors(random_encoder_like(encoder, config["experiment"]["seed"]), images, levels)}
        for level in range(levels):
            loss = row.get(f"loss_level{level}")
            if loss is not None:
                row[f"loss_over_floor_level{level}"] = loss / row["trained"][f"floor_level{level}"]
        print(json.dumps(row))
        (Path(run_dir) / "floor.json").write_text(json.dumps(row, indent=2) + "\n")


def table(args):
    header = ("| run | grid | levels | VICReg | crop | imgs seen | train CPU s | k-NN trained | random init | raw pixels "
              "| linear trained | random init | raw pixels | loss0 / floor0 | eff. rank | target std |")
    print(header)
    print("|" + "---|" * header.count("|")[:-1] if False else "|" + "---|" * (header.count("|") - 1))
    for run_dir in args.runs:
        run_dir = Path(run_dir)
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        ev = json.loads((run_dir / "eval.json").read_text())
        fl = json.loads((run_dir / "floor.json").read_text()) if (run_dir / "floor.json").is_file() else {}
        cpu = json.loads((run_dir / "cpu.json").read_text())["train_cpu_s"] if (run_dir / "cpu.json").is_file() else None
        metrics = final_metrics(run_dir)
        base = ev.get("baselines", {})
        d, m = cfg["data"], cfg["model"]
        seen = d.get("samples_per_epoch") or 60000
        pct = lambda r, p: f"{100 * r[p]['top1']:.1f}" if r and p in r else "-"
        ratio = fl.get("loss_over_floor_level0")
        print(f"| {run_dir.name} | {d['image_size'] // m['patch_size']}x{d['image_size'] // m['patch_size']} "
              f"| {m['num_hierarchies']} | {'on' if cfg['loss']['use_vicreg'] else 'off'} "
              f"| {tuple(d['transforms']['crop_scale'])} | {seen * cfg['training']['epochs']:,} "
              f"| {cpu:.0f} | " if cpu is not None else "| - | ", end="")
        print(f"{pct(ev, 'knn')} | {pct(base.get('random_init'), 'knn')} | {pct(base.get('raw_pixels'), 'knn')} "
              f"| {pct(ev, 'linear')} | {pct(base.get('random_init'), 'linear')} | {pct(base.get('raw_pixels'), 'linear')} "
              f"| {ratio:.2f} | " if ratio is not None else "| - | ", end="")
        print(f"{metrics.get('effective_rank', float('nan')):.1f} | {metrics.get('target_std', float('nan')):.3f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("floor", "table"))
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data-path", default=FASHION_MNIST)
    args = parser.parse_args(argv)
    {"floor": floor, "table": table}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

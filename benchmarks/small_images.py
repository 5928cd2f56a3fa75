"""The small-image study's diagnostics and table (docs/small_images.md).

    python benchmarks/small_images.py floor RUN_DIR [RUN_DIR ...]
    python benchmarks/small_images.py quick RUN_DIR [RUN_DIR ...]
    python benchmarks/small_images.py readouts RUN_DIR [RUN_DIR ...]
    python benchmarks/small_images.py table RUN_DIR [RUN_DIR ...]

floor: the position-only floor of each run's final target encoder: the loss a predictor
gets when it outputs, for every target position, the mean over images of the layer-normed
target at that position (so it knows where a patch is, nothing about the image). A
training loss far below the floor means the predictor reads the context; a loss at or above
it means it learned only positions. Also the loss of predicting zero, and the floor of the
same encoder at its random initialisation. Measured on 2,000 test images, level 0 and 1.

quick: the study's fast k-NN (5,000-image bank, 1,000 test images) and a linear probe on the same
split (trained on the 5,000 bank images, 20 epochs), written to quick_eval.json.

readouts: the full protocol (60,000-image bank, 10,000 test images, the run's eval crop) with
other readouts of the same tokens, for the trained target encoder, the same encoder at its random
initialisation and the raw pixels: the average of the final-normed tokens (the project's
feature), the average of the last block's tokens before the final norm, the four 2x2 quadrant
averages concatenated (rows and columns split at the middle: a coarse layout), each as is and
centred by the bank's mean. Written to readouts.json.

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


def at_size(images, size):
    """uint8 (N, 28, 28, 3) images resized whole (bilinear, no crop) to the encoder's input size."""
    if images.shape[1] == size:
        return images
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])


def level_tokens(encoder, images, level):
    from mlx_hjepa.objective import layer_norm, pool_grid
    from mlx_hjepa.models import normalize_images

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
    keys = ("loss", *(f"loss_level{level}" for level in range(4)), "effective_rank", "target_std")
    return {key: float(np.mean([m[key] for m in tail if key in m])) for key in keys if any(key in m for m in tail)}


def floor(args):
    from mlx_hjepa.data.idx import load_idx
    from mlx_hjepa.eval.features import load_eval_encoder, random_encoder_like, training_crop_fraction

    images = load_idx("fashion_mnist", args.data_path, "test")[0][:2000]
    for run_dir in args.runs:
        encoder, _, config = load_eval_encoder(run_dir, "target")
        levels = config["model"]["num_hierarchies"] if config else 1
        sized = at_size(images, encoder.img_size)
        row = {"run": str(run_dir), **final_metrics(run_dir),
               "trained": floors(encoder, sized, levels),
               "random_init": floors(random_encoder_like(encoder, config["experiment"]["seed"]), sized, levels)}
        for level in range(levels):
            loss = row.get(f"loss_level{level}")
            if loss is not None:
                row[f"loss_over_floor_level{level}"] = loss / row["trained"][f"floor_level{level}"]
        print(json.dumps(row))
        (Path(run_dir) / "floor.json").write_text(json.dumps(row, indent=2) + "\n")


def quick(args):
    """k-NN on a fixed subset (first 5,000 train images as the bank, first 1,000 test images),
    28 px as stored (no crop; resized whole to the encoder's size when it is not 28): the trained
    target encoder (last block, and the last 4 blocks concatenated), the same encoder at its random
    initialisation, and the raw pixels (28 px); and the linear probe (eval.linear_probe, 20 epochs,
    seed 0) of the last block's features of each, trained on the bank and scored on the same 1,000
    test images."""
    from mlx_hjepa.data.idx import load_idx
    from mlx_hjepa.eval.baselines import pixel_features
    from mlx_hjepa.eval.features import extract_features, load_eval_encoder, random_encoder_like
    from mlx_hjepa.eval.knn import knn_classify
    from mlx_hjepa.eval.linear_probe import linear_probe

    train_x, train_y, _ = load_idx("fashion_mnist", args.data_path, "train")
    test_x, test_y, _ = load_idx("fashion_mnist", args.data_path, "test")
    bank, queries = (train_x[:5000], train_y[:5000]), (test_x[:1000], test_y[:1000])

    def knn(a, b):
        return knn_classify(a[0], a[1], b[0], b[1], k=20, num_classes=10)["top1"]

    def linear(a, b):
        return linear_probe(a[0], a[1], b[0], b[1], epochs=20, seed=0, num_classes=10)["top1"]

    for run_dir in args.runs:
        encoder, _, config = load_eval_encoder(run_dir, "target")
        result = {"run": str(run_dir)}
        sized = [(at_size(x, encoder.img_size), y) for x, y in (bank, queries)]  # whole images, at the run's size
        for label, e in (("trained", encoder), ("random_init", random_encoder_like(encoder, config["experiment"]["seed"]))):
            a, b = extract_features(e, sized[0], 256, e.depth), extract_features(e, sized[1], 256, e.depth)
            last = lambda f: (f[0][:, -e.embed_dim:], f[1])
            result[f"{label}_knn"], result[f"{label}_knn_last4"] = knn(last(a), last(b)), knn(a, b)
            result[f"{label}_linear"] = linear(last(a), last(b))
        pixels = pixel_features(bank, 28), pixel_features(queries, 28)
        result["raw_pixels_knn"], result["raw_pixels_linear"] = knn(*pixels), linear(*pixels)
        print(json.dumps(result))
        (Path(run_dir) / "quick_eval.json").write_text(json.dumps(result, indent=2) + "\n")


def readouts(args):
    """k-NN of each readout (see the module docstring) on the full protocol; readouts.json."""
    from mlx_hjepa.data import JEPAEvalTransform, build_dataset
    from mlx_hjepa.eval.features import load_eval_encoder, random_encoder_like
    from mlx_hjepa.eval.knn import knn_classify
    from mlx_hjepa.models import normalize_images

    def tokens(encoder, dataset):
        out, labels = {}, []
        for start in range(0, len(dataset), 500):
            batch = [dataset[i] for i in range(start, min(start + 500, len(dataset)))]
            images = np.stack([dataset.transform(b["image"]) for b in batch])
            x = normalize_images(mx.array(images))
            labels.append(np.array([b["label"] for b in batch]))
            if encoder is None:
                feats = {"final_norm_avg": np.array(x).reshape(len(batch), -1)}
            else:
                normed, (last,) = encoder(x, return_layers=1)
                g = encoder.grid_size[0]
                grid, m = np.array(normed).reshape(len(batch), g, g, -1), (g + 1) // 2
                halves = (slice(0, m), slice(m, g))
                feats = {"final_norm_avg": np.array(normed.mean(axis=1)), "pre_norm_avg": np.array(last.mean(axis=1)),
                         "quadrants_2x2": np.concatenate([grid[:, a, b].mean(axis=(1, 2)) for a in halves for b in halves], -1)}
            for key, value in feats.items():
                out.setdefault(key, []).append(value)
        return {key: np.concatenate(value) for key, value in out.items()}, np.concatenate(labels)

    for run_dir in args.runs:
        encoder, _, config = load_eval_encoder(run_dir, "target")
        crop = training_crop_fraction(config)
        transform = JEPAEvalTransform(encoder.img_size, crop)
        bank, queries = (build_dataset("fashion_mnist", args.data_path, split, image_size=encoder.img_size,
                                       transform=transform) for split in ("train", "test"))
        result = {"run": str(run_dir), "crop_fraction": crop}
        for name, e in (("trained", encoder), ("random_init", random_encoder_like(encoder, config["experiment"]["seed"])),
                        ("raw_pixels", None)):
            (a, a_y), (b, b_y) = tokens(e, bank), tokens(e, queries)
            for kind in a:
                for centred in (False, True):
                    mean = a[kind].mean(axis=0, keepdims=True) if centred else 0
                    key = f"{name}/{kind}{'/centred' if centred else ''}"
                    result[key] = knn_classify(a[kind] - mean, a_y, b[kind] - mean, b_y, k=20, num_classes=10)["top1"]
                    print(key, f"{100 * result[key]:.1f}", flush=True)
        (Path(run_dir) / "readouts.json").write_text(json.dumps(result, indent=2) + "\n")


def table(args):
    """One markdown row per run from config.yaml, metrics.jsonl, quick_eval.json and floor.json
    (quick_eval.json may also hold train_cpu_s, the CPU seconds the training command took)."""
    columns = ("run", "encoder", "predictor", "levels", "targets", "VICReg", "lr", "wd", "crop", "seed", "images seen",
               "train CPU s", "k-NN trained", "random init", "raw pixels", "trained, last 4 blocks",
               "linear trained / random / pixels", "loss0 / floor0", "loss1 / floor1", "loss2 / floor2", "eff. rank",
               "target std")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for run_dir in args.runs:
        run_dir = Path(run_dir)
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        quick_eval = json.loads((run_dir / "quick_eval.json").read_text())
        fl = json.loads((run_dir / "floor.json").read_text()) if (run_dir / "floor.json").is_file() else {}
        metrics = final_metrics(run_dir)
        d, t, m = cfg["data"], cfg["training"], cfg["masking"]
        pct = lambda key: f"{100 * quick_eval[key]:.1f}"
        ratio = lambda key: f"{fl[key]:.2f}" if key in fl else "-"
        targets = f"{m['num_target_masks']} x {'-'.join(f'{v:g}' for v in m['mask_scale'])}"
        mo, pr = cfg["model"], cfg["model"]["predictor"]
        encoder = f"{mo['depth']} x {mo['embed_dim']}, patch {mo['patch_size']} @ {d['image_size']}"
        linear = (" / ".join(pct(f"{k}_linear") for k in ("trained", "random_init", "raw_pixels"))
                  if "trained_linear" in quick_eval else "-")
        cells = (run_dir.name, encoder, f"{pr['depth']} x {pr['embed_dim']}", mo["num_hierarchies"], targets,
                 "on" if cfg["loss"]["use_vicreg"] else "off", f"{t['lr']:g}",
                 f"{t['weight_decay']:g}-{t['weight_decay_end']:g}",
                 "-".join(f"{c:g}" for c in d["transforms"]["crop_scale"]), cfg["experiment"]["seed"],
                 f"{(d.get('samples_per_epoch') or 60000) * t['epochs']:,}",
                 f"{quick_eval['train_cpu_s']:.0f}" if "train_cpu_s" in quick_eval else "-", pct("trained_knn"),
                 pct("random_init_knn"), pct("raw_pixels_knn"), pct("trained_knn_last4"), linear,
                 ratio("loss_over_floor_level0"), ratio("loss_over_floor_level1"), ratio("loss_over_floor_level2"),
                 f"{metrics['effective_rank']:.1f}", f"{metrics['target_std']:.3f}")
        print("| " + " | ".join(map(str, cells)) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("floor", "quick", "readouts", "table"))
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data-path", default=FASHION_MNIST)
    args = parser.parse_args(argv)
    {"floor": floor, "quick": quick, "readouts": readouts, "table": table}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

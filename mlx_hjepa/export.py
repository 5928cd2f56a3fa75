"""Export trained weights to share: one encoder in timm's layout, a Hugging Face folder, or the
full training state.

    python -m mlx_hjepa.export RUN_DIR --out encoder.safetensors                 # target encoder, timm layout
    python -m mlx_hjepa.export RUN_DIR --out encoder.safetensors --which context --layout mlx
    python -m mlx_hjepa.export RUN_DIR --out full.safetensors --which all        # everything, to resume elsewhere
    python -m mlx_hjepa.export RUN_DIR --hf-dir hub/hjepa-vit-small              # model.safetensors + config.json

The file formats live in `mlx_hjepa.weights`; which file of a run to read, in `mlx_hjepa.rundir`.
"""

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import add_debug_flag, run_command
from .rules import IMAGENET_MEAN, IMAGENET_STD
from .rundir import MODEL_FILE, load_encoder, resolve_weights, training_config_of  # noqa: F401 (load_encoder: public)
from .weights import (load_model_checkpoint, model_name, save_encoder, save_model_checkpoint, timm_architecture,
                      timm_model_args, write_text_atomic)


def hub_config(encoder):
    """timm's Hub config.json: `timm.create_model("local-dir:DIR", pretrained=True)` rebuilds the encoder."""
    config = encoder.config()
    size = config["img_size"]
    return {
        "architecture": timm_architecture(config),
        "num_classes": 0,
        "num_features": config["embed_dim"],
        "global_pool": "avg",
        "model_args": timm_model_args(config),
        "pretrained_cfg": {
            "tag": "mlx_hjepa",
            "custom_load": False,
            "input_size": [3, size, size],
            "fixed_input_size": True,
            "interpolation": "bicubic",
            "crop_pct": 0.875,
            "crop_mode": "center",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "num_classes": 0,
            "pool_size": None,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
            "description": f"H-JEPA self-supervised {model_name(config)} encoder trained with mlx-hjepa {__version__}",
        },
    }


def save_hf_dir(encoder, directory, which="target", training_config=None, checkpoint=None):
    """A Hugging Face Hub folder: model.safetensors (timm layout) and timm's config.json."""
    directory = Path(directory)
    weights = save_encoder(encoder, directory / MODEL_FILE, "timm", which, training_config, checkpoint)
    config = write_text_atomic(directory / "config.json", json.dumps(hub_config(encoder), indent=2) + "\n")
    return weights, config


# ---------------------------------------------------------------- command line

def export(source, out=None, which="target", layout=None, hf_dir=None):
    """Export from a run directory, checkpoint folder or model.safetensors; returns the paths written."""
    if out is None and hf_dir is None:
        raise ValueError("Nothing to write: pass --out FILE.safetensors, --hf-dir DIR, or both.")
    if out is not None and not str(out).endswith(".safetensors"):
        raise ValueError(f"--out {out} must end in .safetensors (timm and Hugging Face pick the reader by extension).")
    if which not in ("target", "context", "all"):
        raise ValueError(f"--which must be target, context or all, got '{which}'.")
    layout = layout or ("mlx" if which == "all" else "timm")
    if which == "all" and layout != "mlx":
        raise ValueError("--which all exports the full training state, which exists only in MLX layout; "
                         "drop --layout timm or export one encoder.")
    if hf_dir is not None and (which == "all" or layout != "timm"):
        raise ValueError("--hf-dir writes one encoder in timm layout; use it with --which target|context "
                         "and --layout timm.")

    model_file = resolve_weights(source).resolve()
    model, source_metadata = load_model_checkpoint(model_file, return_metadata=True)
    training_config = training_config_of(model_file)
    checkpoint = model_file.parent.name if model_file.parent.parent.name == "checkpoints" else None
    written = []
    if which == "all":
        extra = {k: v for k, v in source_metadata.items() if k != "model_config"}  # keep the trainer's notes
        if checkpoint:
            extra["checkpoint"] = checkpoint
        if training_config is not None:
            extra["training_config"] = json.dumps(training_config, default=str)
        written.append(save_model_checkpoint(model, out, extra))
        return written
    encoder = model.target_encoder if which == "target" else model.encoder
    if out is not None:
        written.append(save_encoder(encoder, out, layout, which, training_config, checkpoint))
    if hf_dir is not None:
        written.extend(save_hf_dir(encoder, hf_dir, which, training_config, checkpoint))
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m mlx_hjepa.export",
        description="Export trained weights to safetensors: one encoder in timm's layout (default), "
                    "or the full training state in MLX layout.")
    parser.add_argument("source", help="run directory, checkpoint folder (checkpoints/step_N) or model.safetensors")
    parser.add_argument("--out", help="output file, must end in .safetensors")
    parser.add_argument("--which", choices=["target", "context", "all"], default="target",
                        help="target (EMA) encoder, context encoder, or all of the training state (default: target)")
    parser.add_argument("--full", action="store_true", help="same as --which all")
    parser.add_argument("--layout", choices=["timm", "mlx"], default=None,
                        help="parameter names and shapes: timm (PyTorch, default for one encoder) or mlx")
    parser.add_argument("--hf-dir", help="also write a Hugging Face Hub folder (model.safetensors + config.json)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    return run_command(lambda: _export_command(args), args, prefix="hjepa-export:", value_error_code=1)


def _export_command(args):
    which = "all" if args.full else args.which
    written = export(args.source, args.out, which, args.layout, args.hf_dir)
    what = "full training state" if which == "all" else f"{which} encoder"
    for path in written:
        print(f"Wrote {what} to {Path(path).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Weights that travel: safetensors in timm's layout, the trainer's checkpoint format, strict loading back.

    python -m mlx_hjepa.export RUN_DIR --out encoder.safetensors                 # target encoder, timm layout
    python -m mlx_hjepa.export RUN_DIR --out encoder.safetensors --which context --layout mlx
    python -m mlx_hjepa.export RUN_DIR --out full.safetensors --which all        # everything, to resume elsewhere
    python -m mlx_hjepa.export RUN_DIR --hf-dir hub/hjepa-vit-small              # model.safetensors + config.json

The timm layout is exactly the state dict of timm's `VisionTransformer(class_token=False,
global_pool="avg", fc_norm=False, num_classes=0)`: MLX's (O, kH, kW, I) patch kernel becomes
PyTorch's (O, I, kH, kW) and the fixed sin-cos `pos_embed` is stored as (1, N, D). The MLX layout
is `tree_flatten(encoder.parameters())`, loadable with `encoder.load_weights`.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import mlx.core as mx
import yaml
from mlx.utils import tree_flatten

from . import __version__
from .models import HJEPA, PRESETS, VisionTransformer
from .train.step import IMAGENET_MEAN, IMAGENET_STD

MODEL_FILE = "model.safetensors"
LATEST_FILE = "latest.json"
PATCH_KERNEL = "patch_embed.proj.weight"
# Plain ViT entry points registered in timm; any of them builds our encoder once the dims are passed.
TIMM_ARCHITECTURES = {
    "vit_tiny_patch16_224", "vit_small_patch8_224", "vit_small_patch16_224", "vit_base_patch8_224",
    "vit_base_patch16_224", "vit_large_patch14_224", "vit_large_patch16_224",
}
TIMM_HEADLESS = dict(class_token=False, global_pool="avg", fc_norm=False, num_classes=0)


# ---------------------------------------------------------------- reading and checking files

def read_safetensors(path):
    """(arrays, metadata) of a safetensors file, with one clear error for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass a .safetensors file, a checkpoint folder "
                                "or a run directory.")
    try:
        return mx.load(str(path), format="safetensors", return_metadata=True)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}); it may be truncated "
                         "or in another format: export it again.") from None


def check_strict(expected, found, what):
    """Raise a ValueError listing missing keys, unexpected keys and shape differences (timm style).

    expected, found: {name: shape}.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if not (missing or unexpected or shapes):
        return
    lines = [f"Error(s) in loading {what}:"]
    if missing:
        lines.append(f"  Missing key(s) ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        lines.append(f"  Unexpected key(s) ({len(unexpected)}): " + ", ".join(unexpected))
    for k in shapes:
        lines.append(f"  size mismatch for {k}: the file has {tuple(found[k])}, the model needs {tuple(expected[k])}")
    raise ValueError("\n".join(lines))


def shapes_of(arrays):
    return {k: tuple(v.shape) for k, v in arrays.items()}


# ---------------------------------------------------------------- the trainer's checkpoint (all of HJEPA)

def hjepa_config(model: HJEPA):
    """The `model_config` that `build_hjepa_from_config` rebuilds `model` from."""
    pred = model.predictor
    width = pred.predictor_embed.weight.shape[0]
    first = pred.blocks[0] if pred.blocks else None
    mlp_ratio = first.mlp.fc1.weight.shape[0] / width if first else 4.0
    if first and int(width * mlp_ratio) != first.mlp.fc1.weight.shape[0]:
        mlp_ratio = (first.mlp.fc1.weight.shape[0] + 0.5) / width  # survive int() truncation in Block
    return {
        "encoder": model.encoder.config(),
        "predictor": {"embed_dim": width, "depth": len(pred.blocks),
                      "num_heads": first.attn.num_heads if first else 1, "mlp_ratio": mlp_ratio},
        "num_hierarchies": model.num_hierarchies,
    }


def build_hjepa_from_config(model_config):
    encoder = VisionTransformer(**model_config["encoder"])
    p = model_config["predictor"]
    return HJEPA(encoder, p["embed_dim"], p["depth"], p["num_heads"], p["mlp_ratio"], model_config["num_hierarchies"])


def _atomic_save(path, arrays, metadata):
    """Write to a temporary name beside `path`, then rename: a kill leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:  # a file object, so MLX does not append ".safetensors" to the name
            mx.save_safetensors(f, arrays, {k: str(v) for k, v in metadata.items()})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_model_checkpoint(model: HJEPA, path, extra_metadata=None):
    """All HJEPA parameters (context, target, predictor, heads) in MLX layout, atomically."""
    metadata = {"format": "pt", "layout": "mlx", "mlx_hjepa_version": __version__,
                "model_config": json.dumps(hjepa_config(model))}
    metadata.update(extra_metadata or {})
    return _atomic_save(path, dict(tree_flatten(model.parameters())), metadata)


def load_model_checkpoint(path, return_metadata=False):
    """Rebuild the HJEPA a `save_model_checkpoint` file holds; strict about keys and shapes."""
    arrays, metadata = read_safetensors(path)
    if "model_config" not in metadata:
        raise ValueError(f"{path} has no 'model_config' metadata, so it is not a full mlx-hjepa checkpoint; "
                         "pass a model.safetensors written by the trainer or by `export --which all`.")
    try:
        model = build_hjepa_from_config(json.loads(metadata["model_config"]))
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} has a malformed 'model_config' metadata entry ({e!r}); "
                         "it was not written by this version of mlx-hjepa.") from None
    check_strict(shapes_of(dict(tree_flatten(model.parameters()))), shapes_of(arrays), f"HJEPA from {path}")
    model.load_weights(list(arrays.items()), strict=True)
    mx.eval(model.parameters())
    return (model, metadata) if return_metadata else model


def resolve_checkpoint(source):
    """A run directory, a checkpoint folder or a model.safetensors -> the model.safetensors path."""
    source = Path(source)
    if source.is_file():
        return source
    if not source.is_dir():
        raise FileNotFoundError(f"{source} does not exist; pass a run directory, a checkpoint folder "
                                "or a .safetensors file.")
    if (source / MODEL_FILE).is_file():
        return source / MODEL_FILE
    latest = source / "checkpoints" / LATEST_FILE
    if not latest.is_file():
        raise FileNotFoundError(f"{source} holds neither {MODEL_FILE} nor checkpoints/{LATEST_FILE}; "
                                "pass a run directory that has saved at least one checkpoint.")
    try:
        name = json.loads(latest.read_text())["checkpoint"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{latest} is not of the form {{\"checkpoint\": \"step_...\"}}; "
                         "point at a checkpoint folder instead.") from None
    path = source / "checkpoints" / name / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{latest} names {name}, but {path} is missing; point at an older checkpoint folder.")
    return path


def training_config_of(model_file):
    """The run's config.yaml as a dict when `model_file` sits in RUN/checkpoints/step_*/, else None."""
    run_dir = Path(model_file).resolve().parent.parent.parent
    config = run_dir / "config.yaml"
    if Path(model_file).resolve().parent.parent.name != "checkpoints" or not config.is_file():
        return None
    try:
        return yaml.safe_load(config.read_text())
    except yaml.YAMLError:
        return None


# ---------------------------------------------------------------- encoder layouts

def to_timm(encoder: VisionTransformer):
    """The encoder's state dict as timm names it: OIHW patch kernel, (1, N, D) pos_embed."""
    state = dict(tree_flatten(encoder.parameters()))
    state[PATCH_KERNEL] = state[PATCH_KERNEL].transpose(0, 3, 1, 2)
    state["pos_embed"] = encoder.pos_embed
    return state


def from_timm(state):
    """Inverse of `to_timm`: (MLX parameters, pos_embed of shape (N, D))."""
    params = dict(state)
    pos_embed = params.pop("pos_embed")[0]
    params[PATCH_KERNEL] = params[PATCH_KERNEL].transpose(0, 2, 3, 1)
    return params, pos_embed


def encoder_state(encoder, layout):
    if layout == "timm":
        return to_timm(encoder)
    if layout == "mlx":
        return dict(tree_flatten(encoder.parameters()))
    raise ValueError(f"Unknown layout '{layout}'; use 'timm' or 'mlx'.")


def model_name(config):
    """'vit_small_patch16_224' when the dims are a preset's, else a name that spells the dims out."""
    for preset, dims in PRESETS.items():
        if all(config[k] == v for k, v in dims.items()) and config["mlp_ratio"] == 4.0:
            return f"{preset}_patch{config['patch_size']}_{config['img_size']}"
    return (f"vit_d{config['embed_dim']}_depth{config['depth']}_heads{config['num_heads']}"
            f"_mlp{config['mlp_ratio']:g}_patch{config['patch_size']}_{config['img_size']}")


def timm_model_args(config):
    """Keyword arguments for `timm.create_model` that build the exported encoder exactly."""
    args = {k: config[k] for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")}
    return {**args, **TIMM_HEADLESS}


def timm_architecture(config):
    name = model_name({**config, "img_size": 224})
    return name if name in TIMM_ARCHITECTURES else "vit_base_patch16_224"  # model_args override every dim


def encoder_metadata(encoder, layout, which, training_config=None, checkpoint=None):
    config = encoder.config()
    metadata = {
        "format": "pt",  # what transformers and timm's safetensors readers expect
        "layout": layout,
        "producer": "mlx-hjepa",
        "mlx_hjepa_version": __version__,
        "model_name": model_name(config),
        "which": which,
        "encoder_config": json.dumps(config),
        "timm_architecture": timm_architecture(config),
        "timm_model_args": json.dumps(timm_model_args(config)),
        **{k: str(config[k]) for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
                                       "act")},
    }
    if training_config is not None:
        metadata["training_config"] = json.dumps(training_config, default=str)
    if checkpoint is not None:
        metadata["checkpoint"] = checkpoint
    return metadata


def save_encoder(encoder, path, layout="timm", which="target", training_config=None, checkpoint=None):
    metadata = encoder_metadata(encoder, layout, which, training_config, checkpoint)
    return _atomic_save(path, encoder_state(encoder, layout), metadata)


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
    config = directory / "config.json"
    tmp = config.with_name(f".config.json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(hub_config(encoder), indent=2) + "\n")
    os.replace(tmp, config)
    return weights, config


# ---------------------------------------------------------------- loading an encoder back

def _encoder_from_full(arrays, metadata, which):
    """(encoder config, its MLX-layout state, "mlx") out of a full HJEPA checkpoint."""
    prefix = {"target": "target_encoder.", "context": "encoder."}.get(which)
    if prefix is None:
        raise ValueError(f"which must be 'target' or 'context' to load an encoder, got '{which}'.")
    config = json.loads(metadata["model_config"])["encoder"]
    return config, {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}, "mlx"


def load_encoder(path, which="target", **expected):
    """The MLX VisionTransformer a file holds, built from the file's metadata and loaded strictly.

    `path`: an exported encoder (timm or MLX layout), or a full checkpoint / checkpoint folder /
    run directory (then `which` picks the target or context encoder). Keyword arguments such as
    `embed_dim=384, img_size=224` are checked against the file before anything is built.
    """
    path = resolve_checkpoint(path)
    arrays, metadata = read_safetensors(path)
    if "encoder_config" in metadata:
        config, state, layout = json.loads(metadata["encoder_config"]), arrays, metadata.get("layout", "timm")
    elif "model_config" in metadata:
        config, state, layout = _encoder_from_full(arrays, metadata, which)
    else:
        raise ValueError(f"{path} has no mlx-hjepa metadata ('encoder_config' or 'model_config'); "
                         "it was not written by mlx_hjepa.export or the trainer, so its model size is unknown.")

    unknown = sorted(set(expected) - set(config))
    if unknown:
        raise TypeError(f"load_encoder got unknown expected setting(s) {unknown}; use keys of {sorted(config)}.")
    wrong = {k: v for k, v in expected.items() if config[k] != v}
    if wrong:
        held = ", ".join(f"{k}={config[k]}" for k in wrong)
        wanted = ", ".join(f"{k}={v}" for k, v in wrong.items())
        raise ValueError(f"{path} holds a {model_name(config)} encoder ({held}), not the expected {wanted}; "
                         "export the run that has the size you want.")

    encoder = VisionTransformer(**config)
    what = f"{model_name(config)} ({layout} layout) from {path}"
    check_strict(shapes_of(encoder_state(encoder, layout)), shapes_of(state), what)
    if layout == "timm":
        params, pos_embed = from_timm(state)
        encoder._pos_embed = pos_embed
    else:
        params = state
    encoder.load_weights(list(params.items()), strict=True)
    mx.eval(encoder.parameters(), encoder._pos_embed)
    return encoder


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

    model_file = resolve_checkpoint(source).resolve()
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
    args = parser.parse_args(argv)
    which = "all" if args.full else args.which
    try:
        written = export(args.source, args.out, which, args.layout, args.hf_dir)
    except (ValueError, OSError) as e:
        print(f"hjepa-export: {e}", file=sys.stderr)
        return 1
    what = "full training state" if which == "all" else f"{which} encoder"
    for path in written:
        print(f"Wrote {what} to {Path(path).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

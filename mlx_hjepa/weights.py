"""Weight files: atomic writes, safetensors reading with strict key/shape checks, the trainer's
full-model checkpoint file, and encoders in timm's or MLX's layout.

The timm layout is exactly the state dict of timm's `VisionTransformer(class_token=False,
global_pool="avg", fc_norm=False, num_classes=0)`: MLX's (O, kH, kW, I) patch kernel becomes
PyTorch's (O, I, kH, kW) and the fixed sin-cos `pos_embed` is stored as (1, N, D). The MLX layout
is `tree_flatten(encoder.parameters())`, loadable with `encoder.load_weights`.
"""

import json
import os
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from . import __version__
from .models import HJEPA, VisionTransformer
from .rules import PRESETS

PATCH_KERNEL = "patch_embed.proj.weight"
# Plain ViT entry points registered in timm; any of them builds our encoder once the dims are passed.
TIMM_ARCHITECTURES = {
    "vit_tiny_patch16_224", "vit_small_patch8_224", "vit_small_patch16_224", "vit_base_patch8_224",
    "vit_base_patch16_224", "vit_large_patch14_224", "vit_large_patch16_224",
}
TIMM_HEADLESS = dict(class_token=False, global_pool="avg", fc_norm=False, num_classes=0)


# ---------------------------------------------------------------- writing atomically

def atomic_write(path, write, mode="wb"):
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it over `path`
    and fsync the folder: a kill at any moment leaves the old file or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text_atomic(path, text):
    return atomic_write(path, lambda f: f.write(text), mode="w")


def write_json_atomic(path, data):
    return write_text_atomic(path, json.dumps(data, indent=2, default=float) + "\n")


def fsync_dir(folder):
    """Make a rename inside `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


# ---------------------------------------------------------------- the trainer's full-model file

def save_safetensors(path, arrays, metadata=None):
    """Atomically write a safetensors file (metadata values become strings)."""
    metadata = {k: str(v) for k, v in (metadata or {}).items()}
    # a file object, so MLX does not append ".safetensors" to the temporary name
    return atomic_write(path, lambda f: mx.save_safetensors(f, arrays, metadata))


def save_model_checkpoint(model: HJEPA, path, extra_metadata=None):
    """All HJEPA parameters (context, target, predictor, heads) in MLX layout, atomically."""
    metadata = {"format": "pt", "layout": "mlx", "mlx_hjepa_version": __version__,
                "model_config": json.dumps(model.config())}
    metadata.update(extra_metadata or {})
    return save_safetensors(path, dict(tree_flatten(model.parameters())), metadata)


def load_model_checkpoint(path, return_metadata=False):
    """Rebuild the HJEPA a `save_model_checkpoint` file holds; strict about keys and shapes."""
    arrays, metadata = read_safetensors(path)
    if "model_config" not in metadata:
        raise ValueError(f"{path} has no 'model_config' metadata, so it is not a full mlx-hjepa checkpoint; "
                         "pass a model.safetensors written by the trainer or by `export --which all`.")
    try:
        model = HJEPA.from_config(json.loads(metadata["model_config"]))
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} has a malformed 'model_config' metadata entry ({e!r}); "
                         "it was not written by this version of mlx-hjepa.") from None
    check_strict(shapes_of(dict(tree_flatten(model.parameters()))), shapes_of(arrays), f"HJEPA from {path}")
    model.load_weights(list(arrays.items()), strict=True)
    mx.eval(model.parameters())
    return (model, metadata) if return_metadata else model


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
    return save_safetensors(path, encoder_state(encoder, layout), metadata)


# ---------------------------------------------------------------- loading an encoder back

def _encoder_from_full(arrays, metadata, which):
    """(encoder config, its MLX-layout state, "mlx") out of a full HJEPA checkpoint."""
    prefix = {"target": "target_encoder.", "context": "encoder."}.get(which)
    if prefix is None:
        raise ValueError(f"which must be 'target' or 'context' to load an encoder, got '{which}'.")
    config = json.loads(metadata["model_config"])["encoder"]
    return config, {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}, "mlx"


def load_encoder_file(path, which="target", **expected):
    """The MLX VisionTransformer a safetensors file holds, built from the file's metadata and loaded
    strictly. `path`: an exported encoder (timm or MLX layout) or a full checkpoint (then `which`
    picks the target or context encoder). Keyword arguments such as `embed_dim=384, img_size=224`
    are checked against the file before anything is built. (`mlx_hjepa.load_encoder` also takes
    run directories and checkpoint folders.)
    """
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

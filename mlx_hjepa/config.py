"""Run configuration: dataclass schema, YAML loading, `--set` overrides, legacy keys, validation.

The YAML layout is the one of the PyTorch H-JEPA project (sections `experiment`, `model`,
`data`, `masking`, `training`, `loss`, `logging`, `checkpoint`, `evaluation`, and `device`).
No key is ever silently ignored: a key is either part of the schema, a legacy name that is
mapped onto it, a legacy key accepted only with the one value we honour, or rejected with
a sentence saying what to use instead. docs/config.md lists every key.

    cfg = load_config("configs/quickstart.yaml", overrides=["training.epochs=2"])
    enc = resolve_encoder(cfg)          # embed_dim, depth, num_heads, patch_size, mlp_ratio, img_size
    yaml_text = config_to_yaml(cfg)     # the fully resolved config, loadable again

This module imports no MLX: it is pure Python so every command can validate before any work.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .masks import MultiBlockMaskSampler
from .rules import (ACTIVATIONS, DATASET_NAMES, DEFAULT_DATASET_WEIGHT, EVAL_CROP_FRACTION, FOLDER_DATASETS,
                    LEVEL_TARGETS, LOSS_SPELLINGS, MAX_HIERARCHIES, PATCH_SIZES, SAMPLING_STRATEGIES, SPLITS,
                    WEIGHTED_STRATEGIES, encoder_config, weights_problem)

DEVICES = {"auto": "auto", "gpu": "gpu", "cpu": "cpu", "mps": "gpu", "cuda": "gpu", "metal": "gpu"}
LR_SCHEDULES = ("cosine", "linear", "constant")
LR_SCALINGS = ("none", "linear")


class ConfigError(ValueError):
    """A config that cannot be honoured; `.problems` holds one sentence per problem."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems in the config:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


# ---------------------------------------------------------------------------------------- schema


@dataclass
class ExperimentConfig:
    name: str = "hjepa"
    seed: int = 0
    output_dir: str = "runs"


@dataclass
class PredictorConfig:
    embed_dim: int = 384
    depth: int = 6
    num_heads: Optional[int] = None  # None: the encoder's number of heads, as in I-JEPA
    mlp_ratio: float = 4.0


@dataclass
class TargetEncoderConfig:
    ema_decay: float = 0.996
    ema_end_decay: float = 1.0
    ema_anneal_end_step: Optional[int] = None  # None: the last optimizer step of the run


@dataclass
class ModelConfig:
    encoder_type: str = "vit_small"
    # Explicit encoder dimensions; None takes the value from encoder_type.
    embed_dim: Optional[int] = None
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    patch_size: Optional[int] = None
    mlp_ratio: Optional[float] = None
    activation: str = "auto"  # auto (fast_gelu on the CPU backend, else gelu) | gelu (exact, timm's) | fast_gelu
    num_hierarchies: int = 3
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    target_encoder: TargetEncoderConfig = field(default_factory=TargetEncoderConfig)


@dataclass
class DatasetEntry:
    name: str
    weight: float = DEFAULT_DATASET_WEIGHT
    path: Optional[str] = None  # None: data.data_path
    split: Optional[str] = None  # None: the dataset's pretraining split (stl10: train+unlabeled; others: train)
    class_list: Optional[Union[str, list[str]]] = None  # folder datasets: a file of class names or a list


@dataclass
class WeightChange:
    """From epoch `from_epoch` on (0-based), a weighted mix draws with `weights` (one per data.datasets entry)."""
    from_epoch: int
    weights: list[float]


@dataclass
class TransformsConfig:
    crop_scale: tuple[float, float] = (0.3, 1.0)
    horizontal_flip: bool = False
    color_jitter: float = 0.0


@dataclass
class DataConfig:
    dataset: Optional[str] = None  # required unless use_multi_dataset
    data_path: str = "./data"
    split: Optional[str] = None  # one dataset: None is its pretraining split, as for data.datasets entries
    class_list: Optional[Union[str, list[str]]] = None  # one folder dataset: a file of class names or a list
    image_size: int = 224
    batch_size: int = 32  # per process (rank)
    num_workers: int = 4
    use_multi_dataset: bool = False
    datasets: list[DatasetEntry] = field(default_factory=list)
    sampling_strategy: str = "weighted"
    samples_per_epoch: Optional[int] = None  # weighted/balanced mixes; None: the sum of the dataset sizes
    weight_schedule: list[WeightChange] = field(default_factory=list)  # weighted mixes: new weights by epoch
    transforms: TransformsConfig = field(default_factory=TransformsConfig)


@dataclass
class MaskingConfig:
    num_target_masks: int = 4
    mask_scale: tuple[float, float] = (0.15, 0.2)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)
    num_context_masks: int = 1
    context_scale: tuple[float, float] = (0.85, 1.0)
    min_keep: int = 10


@dataclass
class TrainingConfig:
    epochs: int = 100
    warmup_epochs: float = 10.0
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 1e-3
    warmup_lr_ratio: float = 0.2
    use_amp: bool = False
    accumulation_steps: int = 1
    clip_grad: Optional[float] = None
    lr_scaling: str = "none"


@dataclass
class VICRegConfig:
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0


@dataclass
class LossConfig:
    type: str = "smooth_l1"
    hierarchy_weights: Optional[list[float]] = None  # None: 1, 1/2, 1/4, ... one per level
    normalize_embeddings: bool = False
    level_target: str = LEVEL_TARGETS[0]  # norm_of_mean (rules.LEVEL_TARGETS): how levels >= 1 pool their targets
    use_vicreg: bool = False
    vicreg: VICRegConfig = field(default_factory=VICRegConfig)


@dataclass
class LoggingConfig:
    use_tensorboard: bool = False
    log_frequency: int = 50
    log_dataset_distribution: bool = True
    log_images: bool = False  # masks grid to RUN_DIR/images/ (and TensorBoard)
    log_attention: bool = False  # last-block attention and PCA feature maps likewise
    image_frequency: Optional[int] = None  # epochs between images; None: checkpoint.save_frequency


@dataclass
class CheckpointConfig:
    keep_last_k: int = 3
    save_frequency: int = 10


@dataclass
class EvaluationConfig:
    eval_frequency: int = 10
    knn_k: int = 20
    crop_fraction: float = EVAL_CROP_FRACTION


@dataclass
class Config:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    device: str = "auto"


# ------------------------------------------------------------------- keys of the PyTorch project

# Old name -> schema name; the value moves unchanged.
RENAMED_KEYS = {
    "seed": "experiment.seed",
    "experiment.save_frequency": "checkpoint.save_frequency",
    "experiment.eval_frequency": "evaluation.eval_frequency",
    "logging.experiment_name": "experiment.name",
    "model.img_size": "data.image_size",
    "model.ema.momentum": "model.target_encoder.ema_decay",
    "model.ema.momentum_end": "model.target_encoder.ema_end_decay",
    "data.augmentation.color_jitter": "data.transforms.color_jitter",
    "data.augmentation.horizontal_flip": "data.transforms.horizontal_flip",
    "masking.num_masks": "masking.num_target_masks",
    "masking.target_mask_scale": "masking.mask_scale",
    "masking.target_aspect_ratio": "masking.aspect_ratio",
    "masking.context_mask_scale": "masking.context_scale",
    "training.gradient_clip": "training.clip_grad",
    "training.gradient_accumulation_steps": "training.accumulation_steps",
    "logging.tensorboard.enabled": "logging.use_tensorboard",
}

# Keys accepted only with the value that describes what mlx-hjepa always does.
FIXED_KEYS = {
    "model.predictor.qkv_bias": (True, "the predictor's attention always has q, k, v biases (timm layout)"),
    "model.predictor.dropout": (0.0, "no dropout is implemented (I-JEPA uses none)"),
    "model.use_flash_attention": (True, "attention always uses the fused mx.fast.scaled_dot_product_attention"),
    "model.use_rope": (False, "position embeddings are fixed 2-D sin-cos; RoPE is not implemented"),
    "model.use_fpn": (False, "the hierarchy pools the patch grid; there is no FPN"),
    "training.use_gradient_checkpointing": (False, "gradient checkpointing is not implemented; lower data.batch_size and raise training.accumulation_steps instead"),
    "training.use_compile": (True, "the training step is always compiled with mx.compile"),
    "data.pin_memory": (True, "MLX arrays live in unified memory, which needs no pinning"),
    "data.augmentation.random_crop": (True, "the random resized crop is always on; set data.transforms.crop_scale: [1.0, 1.0] to crop nothing"),
    "logging.use_wandb": (False, "Weights & Biases is not supported; use logging.use_tensorboard or metrics.jsonl in the run directory"),
    "logging.log_gradients": (False, "gradient histograms are not logged"),
    "checkpoint.save_best": (False, "there is no validation loss to pick a best checkpoint by; the latest, every save_frequency epochs and the last keep_last_k are kept"),
}

# Keys (or whole sections) that are always rejected, with what to do instead.
UNSUPPORTED_KEYS = {
    "checkpoint.metric": "it only picks a best checkpoint, which is not kept; remove it",
    "checkpoint.mode": "it only picks a best checkpoint, which is not kept; remove it",
    "checkpoint.keep_best_n": "use checkpoint.keep_last_k",
    "checkpoint.checkpoint_dir": "checkpoints go to <experiment.output_dir>/<experiment.name>/checkpoints; set experiment.output_dir",
    "checkpoint.resume": "pass --resume auto or --resume RUN_DIR on the command line",
    "logging.log_dir": "logs go to the run directory <experiment.output_dir>/<experiment.name>; set experiment.output_dir",
    "model.ema.momentum_warmup_epochs": "set model.target_encoder.ema_anneal_end_step (optimizer steps), or leave it unset to anneal until the end of training",
    "distributed": "launch several processes with `mlx.launch` (e.g. `mlx.launch --hosts mac1,mac2 --backend ring python -m mlx_hjepa.train CONFIG`); the world size comes from the launcher",
}

# Common other names for schema keys; used only to suggest the right key in an error.
KEY_SYNONYMS = {
    "learning_rate": "lr", "base_lr": "lr", "num_epochs": "epochs", "max_epochs": "epochs",
    "wd": "weight_decay", "grad_clip": "clip_grad", "max_grad_norm": "clip_grad",
    "img_size": "image_size", "input_size": "image_size", "resolution": "image_size",
    "patch": "patch_size", "heads": "num_heads", "dim": "embed_dim", "width": "embed_dim",
    "num_levels": "num_hierarchies", "levels": "num_hierarchies", "momentum": "ema_decay",
    "workers": "num_workers", "mixed_precision": "use_amp", "amp": "use_amp", "bf16": "use_amp",
    "gradient_accumulation_steps": "accumulation_steps", "keep_last_n": "keep_last_k",
    "max_checkpoints": "keep_last_k", "log_freq": "log_frequency", "eval_freq": "eval_frequency",
    "num_targets": "num_target_masks", "aspect_ratio_range": "aspect_ratio", "scale_range": "mask_scale",
    "knn": "knn_k", "k": "knn_k",
}


# ------------------------------------------------------------------------------------- loading


def load_config(source: Union[str, Path, dict, None] = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Read a YAML file (or a dict), apply `key.path=value` overrides, map legacy keys, validate.

    Raises ConfigError naming every problem found, each with the key and the fix.
    """
    raw = _read_source(source)
    problems: list[str] = []
    raw = _map_legacy_keys(raw, problems)
    for item in overrides:
        path, value = _parse_override(item)
        _set_path(raw, RENAMED_KEYS.get(path, path), value)
    raw = _map_legacy_keys(raw, problems)  # legacy keys given with --set
    cfg = _build(Config, raw, "", problems)  # a value that cannot be read keeps its default...
    try:
        validate(cfg)  # ...so every other value is still checked: all problems in one report
    except ConfigError as err:
        problems.extend(p for p in err.problems if p not in problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def config_to_dict(cfg: Config) -> dict:
    """Plain dict of YAML types (lists, not tuples) that `load_config` reads back to an equal Config."""

    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


class _ConfigDumper(yaml.SafeDumper):
    """Sections in block style, short lists of numbers inline: [0.15, 0.2]."""


def _represent_list(dumper, items):
    inline = all(not isinstance(v, (dict, list)) for v in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=inline)


_ConfigDumper.add_representer(list, _represent_list)


def config_to_yaml(cfg: Config) -> str:
    """The fully resolved config as YAML text (what a run directory's config.yaml holds)."""
    return yaml.dump(config_to_dict(cfg), Dumper=_ConfigDumper, sort_keys=False, default_flow_style=False)


def _read_source(source) -> dict:
    if source is None:
        return {}
    if isinstance(source, dict):
        return copy.deepcopy(source)
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"Config file '{path}' does not exist; pass the path of a YAML file such as configs/quickstart.yaml.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"Config file '{path}' is not valid YAML{where} ({what}); fix the syntax there.") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file '{path}' must hold a mapping of sections (experiment:, model:, ...), not a {type(raw).__name__}.")
    return raw


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"Override '{item}' is not of the form key.path=value, e.g. training.lr=5e-4.")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"Override '{item}': the value is not valid YAML; put it in quotes if it is text.") from None
    return key, value


def _set_path(raw: dict, path: str, value) -> None:
    node: Any = raw
    parts = path.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[:depth])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"Cannot set '{path}': '{where}' is a list of {len(node)} entries; index it with 0..{len(node) - 1}.")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"Cannot set '{path}': '{where}' is a single value, not a section; set '{where}' itself instead.")


def _get_path(raw: dict, path: str):
    node = raw
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _pop_path(raw: dict, path: str):
    """Remove a key and any section left empty by removing it."""
    parts = path.split(".")
    trail = [raw]
    for part in parts[:-1]:
        node = trail[-1].get(part)
        if not isinstance(node, dict):
            return _MISSING
        trail.append(node)
    value = trail[-1].pop(parts[-1], _MISSING)
    for depth in range(len(parts) - 1, 0, -1):
        if trail[depth]:
            break
        del trail[depth - 1][parts[depth - 1]]
    return value


_MISSING = object()


def _map_legacy_keys(raw: dict, problems: list[str]) -> dict:
    for old, new in RENAMED_KEYS.items():
        value = _pop_path(raw, old)
        if value is _MISSING:
            continue
        existing = _get_path(raw, new)
        if existing is not _MISSING and existing != value:
            problems.append(f"Config keys '{old}' ({value!r}) and '{new}' ({existing!r}) disagree; '{old}' is the old name of '{new}': keep only '{new}'.")
        else:
            _set_path(raw, new, value)
    min_lr = _pop_path(raw, "training.min_lr")
    if min_lr is not _MISSING:
        if _get_path(raw, "training.min_lr_ratio") is not _MISSING:
            problems.append("Config keys 'training.min_lr' and 'training.min_lr_ratio' are both set; keep only 'training.min_lr_ratio' (final lr = min_lr_ratio * lr).")
        else:
            lr = _get_path(raw, "training.lr")
            lr = TrainingConfig.lr if lr is _MISSING else lr
            try:
                _set_path(raw, "training.min_lr_ratio", float(min_lr) / float(lr))
            except (TypeError, ValueError, ZeroDivisionError):
                problems.append(f"Config key 'training.min_lr' ({min_lr!r}) cannot be turned into training.min_lr_ratio with training.lr {lr!r}; set 'training.min_lr_ratio' instead.")
    weights = _get_path(raw, "loss.hierarchy_weights")
    if isinstance(weights, (int, float)) and not isinstance(weights, bool):
        levels = _get_path(raw, "model.num_hierarchies")
        levels = ModelConfig.num_hierarchies if levels is _MISSING else levels
        if isinstance(levels, int) and levels >= 1:
            _set_path(raw, "loss.hierarchy_weights", [float(weights)] * levels)
    schedule = _get_path(raw, "data.weight_schedule")
    if isinstance(schedule, dict):  # {epoch: weights}, the short form, becomes [{epoch, weights}, ...]
        try:
            changes = sorted((int(epoch), weights) for epoch, weights in schedule.items())
            _set_path(raw, "data.weight_schedule", [{"from_epoch": e, "weights": w} for e, w in changes])
        except (TypeError, ValueError):
            problems.append(f"Config key 'data.weight_schedule' is {schedule!r}; write it as {{EPOCH: [w1, w2, ...]}} "
                            "with whole-number epochs, e.g. {0: [0.6, 0.4], 50: [0.8, 0.2]}.")
            _pop_path(raw, "data.weight_schedule")
    for key, (honoured, reason) in FIXED_KEYS.items():
        value = _pop_path(raw, key)
        if value is not _MISSING and not _same_value(value, honoured):
            problems.append(f"Config key '{key}: {_yaml_scalar(value)}' cannot be honoured: {reason}. Set it to {_yaml_scalar(honoured)} or remove it.")
    for key, advice in UNSUPPORTED_KEYS.items():
        if _pop_path(raw, key) is not _MISSING:
            problems.append(f"Config key '{key}' is not supported: {advice}.")
    return raw


def _yaml_scalar(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _same_value(value, honoured) -> bool:
    if isinstance(honoured, bool):
        return value is honoured
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == honoured


# ------------------------------------------------------------------------- dict -> dataclasses


def _build(cls, raw, path: str, problems: list[str]):
    if raw is None:  # a section whose keys are all commented out
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"Config key '{path}' must be a section of keys ({', '.join(f.name for f in dataclasses.fields(cls))}), got {raw!r}.")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            problems.append(_unknown_key_message(key_path))
            continue
        converted = _convert(hints[key], value, key_path, problems)
        if converted is not _MISSING:
            kwargs[key] = converted
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in raw:
            problems.append(f"Config key '{path}.{name}' is required.")
            return None
    return cls(**kwargs)


def _convert(tp, value, path: str, problems: list[str]):
    """Check and convert one YAML value to the annotated type; _MISSING after a problem."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) > 1:  # text or a list of texts (class_list): the value's shape picks which
            inner = [a for a in inner if (typing.get_origin(a) is list) == isinstance(value, list)] or inner
        return _convert(inner[0], value, path, problems)
    if dataclasses.is_dataclass(tp):
        built = _build(tp, value, path, problems)
        return _MISSING if built is None else built
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            problems.append(f"Config key '{path}' must be a list of {len(args)} numbers like [0.3, 1.0], got {value!r}.")
            return _MISSING
        items = [_convert(a, v, f"{path}[{i}]", problems) for i, (a, v) in enumerate(zip(args, value))]
        return _MISSING if _MISSING in items else tuple(items)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            problems.append(f"Config key '{path}' must be a list, got {value!r}.")
            return _MISSING
        items = [_convert(args[0], v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return _MISSING if _MISSING in items else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"Config key '{path}' must be true or false, got {value!r}.")
        return _MISSING
    if tp in (int, float):
        number = _as_number(value)
        if number is None:
            kind = "a whole number" if tp is int else "a number"
            problems.append(f"Config key '{path}' must be {kind}, got {value!r}.")
            return _MISSING
        if tp is float:
            return number
        if number != int(number):
            problems.append(f"Config key '{path}' must be a whole number, got {value!r}.")
            return _MISSING
        return int(number)
    if tp is str:
        if isinstance(value, str):
            return value
        problems.append(f"Config key '{path}' must be a text value, got {value!r}.")
        return _MISSING
    raise TypeError(f"no converter for {tp!r} at {path}")  # a schema bug, not a user error


def _as_number(value) -> Optional[float]:
    # PyYAML reads `1e-4` (no dot) as a string, so numeric text is accepted.
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _schema_paths(cls=Config, prefix: str = "") -> list[str]:
    """Every valid key path: sections and leaves."""
    paths = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        paths.append(path)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            paths.extend(_schema_paths(tp, path))
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            paths.extend(_schema_paths(typing.get_args(tp)[0], f"{path}[]"))
    return paths


def _unknown_key_message(path: str) -> str:
    generic = re.sub(r"\[\d+\]", "[]", path)
    section, _, leaf = generic.rpartition(".")
    paths = _schema_paths()
    siblings = [p for p in paths if p.rpartition(".")[0] == section]
    suggestion = None
    # a known other name, or a misspelling of one (learnign_rate -> learning_rate -> lr)
    near = difflib.get_close_matches(leaf, list(KEY_SYNONYMS), n=1, cutoff=0.85)
    synonym = KEY_SYNONYMS.get(leaf) or (KEY_SYNONYMS[near[0]] if near else None)
    if synonym:
        same_section = f"{section}.{synonym}" if section else synonym
        elsewhere = [p for p in paths if p.rpartition(".")[2] == synonym]
        suggestion = same_section if same_section in paths else (elsewhere[0] if elsewhere else None)
    if suggestion is None:  # the right key in the wrong section
        elsewhere = [p for p in paths if p.rpartition(".")[2] == leaf]
        if elsewhere:
            suggestion = elsewhere[0]
    if suggestion is None:
        close = difflib.get_close_matches(leaf, [p.rpartition(".")[2] for p in siblings], n=1, cutoff=0.6)
        if close:
            suggestion = f"{section}.{close[0]}" if section else close[0]
    if suggestion is None:
        close = difflib.get_close_matches(generic, paths, n=1, cutoff=0.75)
        suggestion = close[0] if close else None
    if suggestion is not None:
        indices = re.findall(r"\[\d+\]", path)  # put the list index of the key back
        for index in indices:
            suggestion = suggestion.replace("[]", index, 1)
        return f"Unknown config key '{path}'; did you mean '{suggestion}'?"
    names = ", ".join(p.rpartition(".")[2] for p in siblings)
    where = f"in '{section}'" if section else "at the top level"
    return f"Unknown config key '{path}'; the keys {where} are: {names}."


# ------------------------------------------------------------------------------------ encoders


def resolve_encoder(model: Union[Config, ModelConfig], image_size: Optional[int] = None) -> dict:
    """Encoder dimensions from `encoder_type` and the explicit overrides (rules.encoder_config).

    Given a whole Config, the image size is data.image_size. The image size in a timm-style
    name (the 224 in vit_small_patch16_224) is informational only: data.image_size rules.
    """
    if isinstance(model, Config):
        image_size = model.data.image_size if image_size is None else image_size
        model = model.model
    try:
        resolved = encoder_config(model.encoder_type, image_size, model.patch_size, model.embed_dim, model.depth,
                                  model.num_heads, model.mlp_ratio, model.activation)
    except ValueError as err:
        raise ConfigError(f"Config key 'model.encoder_type': {err}") from None
    del resolved["act"]
    return resolved


def run_dir_of(cfg: Config) -> Path:
    """<experiment.output_dir>/<experiment.name>: where a run writes (mlx_hjepa.rundir owns what is inside)."""
    return Path(cfg.experiment.output_dir) / cfg.experiment.name


def model_config(cfg: Config) -> dict:
    """The `HJEPA.from_config` dict this run's config describes."""
    encoder = dict(resolve_encoder(cfg), act=cfg.model.activation)
    return {"encoder": encoder, "predictor": resolve_predictor(cfg), "num_hierarchies": cfg.model.num_hierarchies}


def resolve_predictor(cfg: Config) -> dict:
    """Predictor dimensions; num_heads None means the encoder's number of heads."""
    p = cfg.model.predictor
    heads = p.num_heads if p.num_heads is not None else resolve_encoder(cfg)["num_heads"]
    return dict(embed_dim=p.embed_dim, depth=p.depth, num_heads=heads, mlp_ratio=p.mlp_ratio)


def grid_size(cfg: Config) -> int:
    """Side of the square patch grid."""
    return cfg.data.image_size // resolve_encoder(cfg)["patch_size"]


def vicreg_weights(cfg: Config) -> tuple[float, float]:
    """(variance weight, covariance weight) added to the prediction loss; (0, 0) when off.

    The prediction loss plays the part of VICReg's invariance term with weight 1, so the
    PyTorch project's coefficients are taken relative to sim_coeff (25/25/1 -> 1.0 and 0.04).
    """
    if not cfg.loss.use_vicreg:
        return 0.0, 0.0
    v = cfg.loss.vicreg
    return v.std_coeff / v.sim_coeff, v.cov_coeff / v.sim_coeff


def global_batch(cfg: Config, world_size: int = 1) -> int:
    """Images per optimizer step: batch per process x accumulation steps x processes."""
    return cfg.data.batch_size * cfg.training.accumulation_steps * world_size


def describe_batch(cfg: Config, world_size: int = 1) -> str:
    return (f"batch {cfg.data.batch_size} per process x {world_size} process(es) x "
            f"{cfg.training.accumulation_steps} accumulation = global batch {global_batch(cfg, world_size)}")


def scaled_lr(cfg: Config, world_size: int = 1) -> float:
    """Peak learning rate after training.lr_scaling (linear: lr * global batch / 256)."""
    if cfg.training.lr_scaling == "linear":
        return cfg.training.lr * global_batch(cfg, world_size) / 256
    return cfg.training.lr


def launch_info(cfg: Config, world_size: int) -> dict:
    """What a launch adds to the config (run.json): the world size comes from mlx.launch."""
    return {"world_size": world_size, "global_batch": global_batch(cfg, world_size),
            "batch_size_per_process": cfg.data.batch_size, "accumulation_steps": cfg.training.accumulation_steps,
            "peak_lr": scaled_lr(cfg, world_size), "lr_scaling": cfg.training.lr_scaling}


def checkpoints_to_keep(cfg: Config, steps_per_epoch: int, step: int) -> set:
    """Steps whose checkpoints stay after a save at `step`: that one, and the last checkpoint.keep_last_k
    of those taken every checkpoint.save_frequency epochs."""
    every, k = cfg.checkpoint.save_frequency, cfg.checkpoint.keep_last_k
    periodic = [e * steps_per_epoch for e in range(every, cfg.training.epochs + 1, every) if e * steps_per_epoch <= step]
    return {step, *periodic[-k:]}


# ---------------------------------------------------------------------------------- validation


def validate(cfg: Config) -> Config:
    """Check every value and normalise spellings (device mps -> gpu, loss huber -> smooth_l1, ...).

    Raises ConfigError listing every problem. Returns cfg, changed in place.
    """
    c = _Checks()
    _check_experiment(cfg, c)
    encoder = _check_model(cfg, c)
    grid = _check_data(cfg, c, encoder)
    _check_masking(cfg, c, grid)
    _check_training(cfg, c)
    _check_loss(cfg, c)
    if c.problems:
        raise ConfigError(c.problems)
    return cfg


class _Checks:
    """Collects one sentence per problem."""

    def __init__(self):
        self.problems: list[str] = []

    def __call__(self, ok: bool, message: str) -> bool:
        if not ok:
            self.problems.append(message)
        return ok

    def range(self, key: str, pair, low_open: float, high: Optional[float]) -> bool:
        a, b = pair
        within = a > low_open and b > low_open and (high is None or (a <= high and b <= high))
        bounds = f"in ({low_open:g}, {high:g}]" if high is not None else f"above {low_open:g}"
        return self(within and a <= b, f"Config key '{key}' is {list(pair)}; give [min, max] with min <= max, both {bounds}.")

    def choice(self, key: str, value: str, valid) -> str:
        """The normalised spelling of value, or value itself after recording the problem."""
        options = valid if isinstance(valid, dict) else {v: v for v in valid}
        normal = value.strip().lower()
        if normal in options:
            return options[normal]
        close = difflib.get_close_matches(normal, list(options), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else "."
        self.problems.append(f"Config key '{key}' is '{value}'; valid values are {', '.join(options)}{hint}")
        return value


def _check_experiment(cfg: Config, check: _Checks) -> None:
    ex = cfg.experiment
    check(bool(ex.name.strip()) and "/" not in ex.name and "\\" not in ex.name,
          f"Config key 'experiment.name' is '{ex.name}'; give a non-empty name without slashes (it names the run directory).")
    check(ex.seed >= 0, f"Config key 'experiment.seed' is {ex.seed}; use a seed >= 0.")
    check(bool(ex.output_dir.strip()), "Config key 'experiment.output_dir' is empty; give a directory such as runs.")
    cfg.device = check.choice("device", cfg.device, DEVICES)
    lg, ck, ev = cfg.logging, cfg.checkpoint, cfg.evaluation
    check(lg.log_frequency >= 1, f"Config key 'logging.log_frequency' is {lg.log_frequency}; log every 1 or more steps.")
    check(lg.image_frequency is None or lg.image_frequency >= 1, f"Config key 'logging.image_frequency' is {lg.image_frequency}; write images every 1 or more epochs, or leave it unset for every checkpoint.")
    check(ck.keep_last_k >= 1, f"Config key 'checkpoint.keep_last_k' is {ck.keep_last_k}; keep at least 1 checkpoint.")
    check(ck.save_frequency >= 1, f"Config key 'checkpoint.save_frequency' is {ck.save_frequency}; save every 1 or more epochs.")
    check(ev.eval_frequency >= 0, f"Config key 'evaluation.eval_frequency' is {ev.eval_frequency}; use a number of epochs, or 0 for no k-NN during training.")
    check(ev.knn_k >= 1, f"Config key 'evaluation.knn_k' is {ev.knn_k}; use at least 1 neighbour (commonly 20).")
    check(0 < ev.crop_fraction <= 1, f"Config key 'evaluation.crop_fraction' is {ev.crop_fraction}; use a fraction in "
                                     f"(0, 1]: 0.875 (resize to image_size / 0.875, centre crop) or 1.0 (the whole image).")


def _check_model(cfg: Config, check: _Checks) -> Optional[dict]:
    """Returns the resolved encoder, or None when it cannot be resolved."""
    m = cfg.model
    encoder = None
    try:
        encoder = resolve_encoder(cfg)
    except ConfigError as err:
        check.problems.extend(err.problems)
    for key in ("embed_dim", "depth", "num_heads", "patch_size"):
        value = getattr(m, key)
        check(value is None or value >= 1, f"Config key 'model.{key}' is {value}; use a positive number or leave it unset to take it from model.encoder_type.")
    check(m.mlp_ratio is None or m.mlp_ratio > 0, f"Config key 'model.mlp_ratio' is {m.mlp_ratio}; use a positive number such as 4.0.")
    if encoder:
        check(encoder["patch_size"] in PATCH_SIZES,
              f"Patch size {encoder['patch_size']} (model.patch_size or the patchN in model.encoder_type) is not supported; use one of {', '.join(map(str, PATCH_SIZES))}.")
        if encoder["num_heads"] >= 1:
            check(encoder["embed_dim"] % encoder["num_heads"] == 0,
                  f"Config key 'model.embed_dim' ({encoder['embed_dim']}) is not divisible by model.num_heads ({encoder['num_heads']}); change one of them.")
    check(1 <= m.num_hierarchies <= MAX_HIERARCHIES,
          f"Config key 'model.num_hierarchies' is {m.num_hierarchies}; use 1 to {MAX_HIERARCHIES} (1 is plain I-JEPA).")
    m.activation = check.choice("model.activation", m.activation, ACTIVATIONS)

    p = m.predictor
    check(p.embed_dim >= 1 and p.depth >= 1, f"Config keys 'model.predictor.embed_dim' ({p.embed_dim}) and 'model.predictor.depth' ({p.depth}) must be positive.")
    check(p.mlp_ratio > 0, f"Config key 'model.predictor.mlp_ratio' is {p.mlp_ratio}; use a positive number such as 4.0.")
    heads = p.num_heads if p.num_heads is not None else (encoder["num_heads"] if encoder else None)
    if heads is not None and p.embed_dim >= 1:
        check(heads >= 1 and p.embed_dim % heads == 0,
              f"Config key 'model.predictor.embed_dim' ({p.embed_dim}) is not divisible by the predictor's {heads} heads"
              f"{'' if p.num_heads else ' (model.predictor.num_heads unset: the encoder has that many)'}; set model.predictor.num_heads to a divisor.")

    te = m.target_encoder
    check(0.0 <= te.ema_decay <= te.ema_end_decay <= 1.0,
          f"Config keys 'model.target_encoder.ema_decay' ({te.ema_decay}) and 'ema_end_decay' ({te.ema_end_decay}) must satisfy 0 <= ema_decay <= ema_end_decay <= 1 (I-JEPA: 0.996 -> 1.0).")
    check(te.ema_anneal_end_step is None or te.ema_anneal_end_step >= 1,
          f"Config key 'model.target_encoder.ema_anneal_end_step' is {te.ema_anneal_end_step}; use a positive step count or leave it unset (anneal until the end of training).")
    return encoder


def _check_data(cfg: Config, check: _Checks, encoder: Optional[dict]) -> Optional[int]:
    """Returns the side of the patch grid, or None when it is not known."""
    d = cfg.data
    if d.use_multi_dataset:
        check(d.dataset is None, f"Config key 'data.dataset' ('{d.dataset}') is not used when data.use_multi_dataset is true; remove it and list the datasets in data.datasets.")
        if check(len(d.datasets) >= 1, "Config key 'data.datasets' is empty but data.use_multi_dataset is true; list entries like {name: cifar10, weight: 1.0}."):
            for i, entry in enumerate(d.datasets):
                entry.name = check.choice(f"data.datasets[{i}].name", entry.name, DATASET_NAMES)
                check(entry.weight >= 0, f"Config key 'data.datasets[{i}].weight' is {entry.weight}; weights must be >= 0.")
                _check_source(check, f"data.datasets[{i}]", entry.name, entry.split, entry.class_list)
            check(sum(max(e.weight, 0.0) for e in d.datasets) > 0, "Config key 'data.datasets' has weights that sum to 0; give at least one dataset a positive weight.")
        d.sampling_strategy = check.choice("data.sampling_strategy", d.sampling_strategy, SAMPLING_STRATEGIES)
        problem = weights_problem(d.sampling_strategy, [e.weight for e in d.datasets])
        check(problem is None, f"Config key 'data.datasets[].weight': {problem}")
        _check_weight_schedule(cfg, check)
        check(d.split is None and d.class_list is None,
              "Config keys 'data.split' and 'data.class_list' are for one dataset; with data.use_multi_dataset give "
              "each entry of data.datasets its own split and class_list.")
        check(d.samples_per_epoch is None or d.sampling_strategy != "concat",
              "Config key 'data.samples_per_epoch' is not used with sampling_strategy 'concat' (every image once per epoch); remove it or use 'weighted'.")
    else:
        if check(d.dataset is not None, f"Config key 'data.dataset' is not set; name one of {', '.join(DATASET_NAMES)}, or set data.use_multi_dataset: true with data.datasets."):
            d.dataset = check.choice("data.dataset", d.dataset, DATASET_NAMES)
            _check_source(check, "data", d.dataset, d.split, d.class_list)
        check(not d.weight_schedule, "Config key 'data.weight_schedule' only applies to a weighted mix; set "
                                     "data.use_multi_dataset: true with data.datasets, or remove it.")
        check(not d.datasets, "Config key 'data.datasets' is set but data.use_multi_dataset is false; set use_multi_dataset: true, or use data.dataset for one dataset.")
        check(d.sampling_strategy == DataConfig.sampling_strategy,
              "Config key 'data.sampling_strategy' only applies with data.use_multi_dataset: true; remove it.")
    check(d.samples_per_epoch is None or d.samples_per_epoch >= 1, f"Config key 'data.samples_per_epoch' is {d.samples_per_epoch}; use a positive count or leave it unset.")
    check(bool(d.data_path.strip()), "Config key 'data.data_path' is empty; give the directory that holds the data, e.g. ./data.")
    check(d.batch_size >= 1, f"Config key 'data.batch_size' is {d.batch_size}; use at least 1 (it is the batch per process).")
    check(d.num_workers >= 0, f"Config key 'data.num_workers' is {d.num_workers}; use 0 or more loader threads.")
    check.range("data.transforms.crop_scale", d.transforms.crop_scale, 0.0, 1.0)
    check(0.0 <= d.transforms.color_jitter <= 1.0,
          f"Config key 'data.transforms.color_jitter' is {d.transforms.color_jitter}; use a strength in [0, 1] (0 turns it off, as in I-JEPA).")
    if not check(d.image_size >= 1, f"Config key 'data.image_size' is {d.image_size}; use a positive size such as 224."):
        return None
    if not encoder or encoder["patch_size"] not in PATCH_SIZES:
        return None
    patch = encoder["patch_size"]
    if not check(d.image_size % patch == 0,
                 f"Config key 'data.image_size' ({d.image_size}) is not divisible by the patch size {patch}; use a multiple such as {max(patch, d.image_size // patch * patch)}."):
        return None
    return d.image_size // patch


def _check_source(check: _Checks, key: str, name: str, split: Optional[str], class_list) -> None:
    """The split and class list of one data source (data, or one data.datasets entry)."""
    if name not in DATASET_NAMES:
        return
    splits = SPLITS[name]
    check(split is None or (splits is None and bool(split.strip())) or (splits is not None and split in splits),
          f"Config key '{key}.split' is '{split}'; {name} has splits {', '.join(splits or ['<any folder name>'])} "
          "(leave it unset for the pretraining split).")
    if class_list is not None:
        if check(name in FOLDER_DATASETS, f"Config key '{key}.class_list' is set but {name} has a fixed set of "
                                              f"classes; class_list applies to {', '.join(FOLDER_DATASETS)}."):
            check(not isinstance(class_list, list) or len(class_list) > 0,
                  f"Config key '{key}.class_list' is an empty list; list class folder names (synsets) or give a file "
                  "with one name a line.")


def _check_weight_schedule(cfg: Config, check: _Checks) -> None:
    d, n = cfg.data, len(cfg.data.datasets)
    if not d.weight_schedule:
        return
    if not check(d.sampling_strategy in WEIGHTED_STRATEGIES,
                 f"Config key 'data.weight_schedule' needs sampling_strategy: weighted ('{d.sampling_strategy}' draws "
                 "no image by weight); remove it or use sampling_strategy: weighted."):
        return
    epochs = [c.from_epoch for c in d.weight_schedule]
    check(len(set(epochs)) == len(epochs), f"Config key 'data.weight_schedule' names epochs {epochs}; name each epoch once.")
    for i, change in enumerate(d.weight_schedule):
        key = f"data.weight_schedule[{i}]"
        check(0 <= change.from_epoch < cfg.training.epochs,
              f"Config key '{key}.from_epoch' is {change.from_epoch}; use an epoch from 0 to training.epochs - 1 "
              f"({cfg.training.epochs - 1}), counted from 0.")
        check(len(change.weights) == n and all(w >= 0 for w in change.weights) and sum(change.weights) > 0,
              f"Config key '{key}.weights' is {change.weights}; give {n} weights >= 0 (one per data.datasets entry, "
              "in order) with a positive sum.")
        entry_weights = [e.weight for e in d.datasets]
        check(change.from_epoch != 0 or entry_weights == change.weights
              or all(w == DEFAULT_DATASET_WEIGHT for w in entry_weights),
              f"Config keys 'data.datasets[].weight' ({entry_weights}) and '{key}.weights' ({change.weights}) both "
              "set the weights of epoch 0; keep one of them.")


def _check_masking(cfg: Config, check: _Checks, grid: Optional[int]) -> None:
    mk, levels = cfg.masking, cfg.model.num_hierarchies
    check(mk.num_target_masks >= 1, f"Config key 'masking.num_target_masks' is {mk.num_target_masks}; use at least 1 (I-JEPA: 4).")
    check(mk.num_context_masks == 1, f"Config key 'masking.num_context_masks' is {mk.num_context_masks}; only one context block is implemented (I-JEPA multi-block), set it to 1.")
    blocks_ok = check.range("masking.mask_scale", mk.mask_scale, 0.0, 1.0) & check.range("masking.aspect_ratio", mk.aspect_ratio, 0.0, None)
    check.range("masking.context_scale", mk.context_scale, 0.0, 1.0)
    check(mk.min_keep >= 1, f"Config key 'masking.min_keep' is {mk.min_keep}; use at least 1 context token (I-JEPA: 10).")
    if grid is None or not blocks_ok or mk.min_keep < 1 or mk.num_target_masks < 1 or not 1 <= levels <= MAX_HIERARCHIES:
        return
    try:  # the sampler owns the rules for what a grid can hold; its words become config keys
        MultiBlockMaskSampler.from_config(mk, grid, levels).check_levels()
    except ValueError as err:
        message = re.sub(r"\b(min_keep|target_scale|num_hierarchies)\b",
                         lambda m: _SAMPLER_KEYS[m[1]], str(err))
        check.problems.append(f"Config key {message}")


_SAMPLER_KEYS = {"min_keep": "'masking.min_keep'", "target_scale": "'masking.mask_scale'",
                 "num_hierarchies": "'model.num_hierarchies'"}


def _check_training(cfg: Config, check: _Checks) -> None:
    t = cfg.training
    check(t.epochs >= 1, f"Config key 'training.epochs' is {t.epochs}; use at least 1.")
    check(t.epochs < 1 or 0 <= t.warmup_epochs <= t.epochs, f"Config key 'training.warmup_epochs' is {t.warmup_epochs}; use 0 to training.epochs ({t.epochs}).")
    if check(t.optimizer.strip().lower() == "adamw",
             f"Config key 'training.optimizer' is '{t.optimizer}'; only adamw is implemented (for plain Adam use adamw with weight_decay: 0 and weight_decay_end: 0)."):
        t.optimizer = "adamw"
    check(t.lr > 0, f"Config key 'training.lr' is {t.lr}; use a positive learning rate such as 1.0e-3.")
    check(t.weight_decay >= 0 and t.weight_decay_end >= 0,
          f"Config keys 'training.weight_decay' ({t.weight_decay}) and 'training.weight_decay_end' ({t.weight_decay_end}) must be >= 0.")
    check(all(0.0 <= b < 1.0 for b in t.betas), f"Config key 'training.betas' is {list(t.betas)}; both must be in [0, 1), e.g. [0.9, 0.999].")
    t.lr_schedule = check.choice("training.lr_schedule", t.lr_schedule, LR_SCHEDULES)
    check(0.0 <= t.min_lr_ratio <= 1.0, f"Config key 'training.min_lr_ratio' is {t.min_lr_ratio}; use a fraction of training.lr in [0, 1].")
    check(0.0 <= t.warmup_lr_ratio <= 1.0, f"Config key 'training.warmup_lr_ratio' is {t.warmup_lr_ratio}; use a fraction of training.lr in [0, 1].")
    check(t.accumulation_steps >= 1, f"Config key 'training.accumulation_steps' is {t.accumulation_steps}; use at least 1 (1 means no accumulation).")
    if t.clip_grad == 0:
        t.clip_grad = None  # the PyTorch project's "0 = no clipping"
    check(t.clip_grad is None or t.clip_grad > 0, f"Config key 'training.clip_grad' is {t.clip_grad}; use a positive max gradient norm, or null for no clipping.")
    t.lr_scaling = check.choice("training.lr_scaling", t.lr_scaling, LR_SCALINGS)


def _check_loss(cfg: Config, check: _Checks) -> None:
    lo, levels = cfg.loss, cfg.model.num_hierarchies
    lo.type = check.choice("loss.type", lo.type, LOSS_SPELLINGS)
    lo.level_target = check.choice("loss.level_target", lo.level_target, LEVEL_TARGETS)
    if lo.hierarchy_weights is None and 1 <= levels <= MAX_HIERARCHIES:
        lo.hierarchy_weights = [0.5**level for level in range(levels)]
    if lo.hierarchy_weights is not None:
        weights = lo.hierarchy_weights
        example = [0.5**level for level in range(max(1, min(levels, MAX_HIERARCHIES)))]
        check(len(weights) == levels,
              f"Config key 'loss.hierarchy_weights' has {len(weights)} weights but model.num_hierarchies is {levels}; give one weight per level (finest first), e.g. {example}.")
        check(all(w >= 0 for w in weights) and sum(weights) > 0,
              f"Config key 'loss.hierarchy_weights' is {weights}; weights must be >= 0 with a positive sum.")
    v = lo.vicreg
    check(v.sim_coeff > 0 and v.std_coeff >= 0 and v.cov_coeff >= 0,
          f"Config keys 'loss.vicreg.*' are sim_coeff {v.sim_coeff}, std_coeff {v.std_coeff}, cov_coeff {v.cov_coeff}; use sim_coeff > 0 and the others >= 0 (VICReg: 25, 25, 1).")

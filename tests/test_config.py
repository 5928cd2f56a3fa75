"""Config schema: shipped configs load, every unknown or unhonourable key is an error, bad values too."""

import copy
from pathlib import Path

import pytest
import yaml

from mlx_hjepa.config import (
    FIXED_KEYS,
    RENAMED_KEYS,
    UNSUPPORTED_KEYS,
    ConfigError,
    ModelConfig,
    _schema_paths,
    config_to_dict,
    config_to_yaml,
    grid_size,
    load_config,
    resolve_encoder,
    resolve_predictor,
    scaled_lr,
    vicreg_weights,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))
MINIMAL = {"data": {"dataset": "synthetic", "image_size": 48}, "model": {"encoder_type": "vit_tiny_patch8", "num_hierarchies": 2}}


def minimal(**sections):
    """MINIMAL with some sections' keys replaced (nested dicts merged one level deep)."""
    raw = copy.deepcopy(MINIMAL)
    for name, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(name, {}).update(values)
        else:
            raw[name] = values
    return raw


def problems_of(source, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(source, overrides)
    return info.value.problems


# ----------------------------------------------------------------------------- shipped configs


def test_the_shipped_configs_are_all_there():
    names = {p.name for p in SHIPPED}
    assert {"m1_max_imagenet100.yaml", "m1_max_imagenet100_100epoch.yaml", "imagenet100_multi_dataset.yaml",
            "foundation_model_mini.yaml", "cifar10_sanity.yaml", "quickstart.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_loads_validates_and_round_trips(path):
    cfg = load_config(path)
    assert cfg.experiment.name == path.stem
    again = load_config(yaml.safe_load(config_to_yaml(cfg)))
    assert again == cfg and config_to_dict(again) == config_to_dict(cfg)
    # A shipped config spells out every section, so what a user reads is what runs.
    assert set(yaml.safe_load(path.read_text())) == set(config_to_dict(cfg))


def test_100epoch_config_is_the_same_run_under_the_known_name():
    a = load_config(ROOT / "configs/m1_max_imagenet100.yaml")
    b = load_config(ROOT / "configs/m1_max_imagenet100_100epoch.yaml")
    assert b.training.epochs == 100
    b.experiment.name = a.experiment.name
    assert a == b


def test_shipped_configs_describe_what_the_issue_asks_for():
    m1 = load_config(ROOT / "configs/m1_max_imagenet100.yaml")
    assert (m1.data.dataset, m1.data.image_size, m1.data.batch_size, m1.model.num_hierarchies) == ("imagenet100", 224, 32, 3)
    assert resolve_encoder(m1)["embed_dim"] == 384 and resolve_encoder(m1)["patch_size"] == 16
    mix = load_config(ROOT / "configs/imagenet100_multi_dataset.yaml").data
    assert [(d.name, d.weight) for d in mix.datasets] == [("imagenet100", 0.60), ("stl10", 0.25), ("cifar100", 0.15)]
    quick = load_config(ROOT / "configs/quickstart.yaml")
    assert quick.data.dataset == "synthetic" and quick.data.image_size <= 64
    assert quick.training.epochs % quick.evaluation.eval_frequency == 0  # the last epoch ends with a k-NN score
    assert load_config(ROOT / "configs/cifar10_sanity.yaml").data.dataset == "cifar10"


# ------------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize("raw, message", [
    ({"training": {"learning_rate": 1e-3}}, "Unknown config key 'training.learning_rate'; did you mean 'training.lr'?"),
    ({"training": {"epoch": 3}}, "Unknown config key 'training.epoch'; did you mean 'training.epochs'?"),
    ({"trainig": {"lr": 1e-3}}, "Unknown config key 'trainig'; did you mean 'training'?"),
    ({"model": {"predictor": {"dpth": 2}}}, "Unknown config key 'model.predictor.dpth'; did you mean 'model.predictor.depth'?"),
    ({"training": {"ema_decay": 0.99}}, "Unknown config key 'training.ema_decay'; did you mean 'model.target_encoder.ema_decay'?"),
    ({"data": {"transforms": {"hflip": True}}}, "Unknown config key 'data.transforms.hflip'"),
])
def test_unknown_key_names_full_path_and_nearest_key(raw, message):
    problems = problems_of(minimal(**raw))
    assert len(problems) == 1 and problems[0].startswith(message)


def test_unknown_key_in_a_dataset_entry_keeps_the_index():
    data = {"dataset": None, "use_multi_dataset": True, "datasets": [{"name": "synthetic"}, {"name": "cifar10", "wieght": 2}]}
    assert problems_of(minimal(data=data)) == ["Unknown config key 'data.datasets[1].wieght'; did you mean 'data.datasets[1].weight'?"]


def test_unknown_key_with_no_near_match_lists_the_section():
    (problem,) = problems_of(minimal(logging={"zzzz": 1}))
    assert "Unknown config key 'logging.zzzz'" in problem and "log_frequency" in problem


def test_every_problem_is_reported_at_once():
    problems = problems_of(minimal(training={"learning_rate": 1, "epoch": 2}, evaluation={"knn": 5}))
    assert len(problems) == 3
    assert "3 problems" in str(ConfigError(problems))


# --------------------------------------------------------------------------- the PyTorch layout

PYTORCH_LAYOUT = """
experiment: {name: imagenet100_100epoch, seed: 42, output_dir: results/checkpoints, save_frequency: 10, eval_frequency: 10}
model:
  encoder_type: vit_small_patch16_224
  embed_dim: 384
  num_hierarchies: 3
  target_encoder: {ema_decay: 0.996, ema_end_decay: 1.0, ema_anneal_end_step: 300000}
  predictor: {depth: 6, num_heads: 6, mlp_ratio: 4.0, qkv_bias: True, dropout: 0.0}
data:
  dataset: imagenet100
  data_path: ./data
  image_size: 224
  batch_size: 32
  num_workers: 6
  transforms: {crop_scale: [0.8, 1.0], horizontal_flip: true, color_jitter: 0.1}
training:
  epochs: 100
  warmup_epochs: 10
  optimizer: adamw
  lr: 1e-4
  weight_decay: 0.04
  betas: [0.9, 0.95]
  lr_schedule: cosine
  min_lr_ratio: 0.01
  warmup_lr_ratio: 0.001
  use_amp: true
masking: {num_target_masks: 4, mask_scale: [0.15, 0.2], aspect_ratio: [0.75, 1.5], num_context_masks: 1}
loss:
  type: mse
  hierarchy_weights: [1.0, 0.7, 0.5]
  normalize_embeddings: false
  use_vicreg: true
  vicreg: {sim_coeff: 25.0, std_coeff: 25.0, cov_coeff: 1.0}
logging: {use_wandb: false, use_tensorboard: true, log_frequency: 50, log_images: true, log_attention: true, log_gradients: false}
device: mps
checkpoint: {save_best: true, metric: val_loss, mode: min, keep_last_k: 3}
"""


def test_pytorch_config_lists_every_key_it_cannot_honour(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(PYTORCH_LAYOUT)
    problems = problems_of(path)
    assert len(problems) == 3
    for key in ("checkpoint.save_best: true", "checkpoint.metric", "checkpoint.mode"):
        assert sum(f"'{key}" in p for p in problems) == 1, key
    assert all("remove it" in p for p in problems)


def test_pytorch_config_with_honourable_values_loads_with_its_meaning():
    raw = yaml.safe_load(PYTORCH_LAYOUT)
    raw["checkpoint"]["save_best"] = False
    del raw["checkpoint"]["metric"], raw["checkpoint"]["mode"]
    cfg = load_config(raw)
    assert cfg.device == "gpu"  # mps: MLX's Metal GPU
    assert cfg.training.lr == 1e-4  # PyYAML reads 1e-4 as text
    assert cfg.model.target_encoder.ema_anneal_end_step == 300000
    assert (cfg.checkpoint.save_frequency, cfg.evaluation.eval_frequency, cfg.experiment.seed) == (10, 10, 42)
    assert cfg.loss.type == "mse" and cfg.loss.hierarchy_weights == [1.0, 0.7, 0.5]
    assert cfg.logging.log_images and cfg.logging.log_attention  # the PyTorch keys are honoured
    assert vicreg_weights(cfg) == (1.0, 1.0 / 25.0)
    assert cfg.data.transforms.crop_scale == (0.8, 1.0) and cfg.data.transforms.horizontal_flip


def test_legacy_names_are_mapped():
    raw = minimal(
        seed=7,
        masking={"num_masks": 3, "context_mask_scale": [0.9, 1.0]},
        model={"ema": {"momentum": 0.99, "momentum_end": 0.999}, "use_flash_attention": True},
        data={"augmentation": {"color_jitter": 0.2, "horizontal_flip": True, "random_crop": True}, "pin_memory": True},
        training={"lr": 2e-3, "min_lr": 2e-6, "gradient_clip": 1.5},
        logging={"tensorboard": {"enabled": True}, "experiment_name": "old_name"},
    )
    cfg = load_config(raw)
    assert cfg.experiment.seed == 7 and cfg.experiment.name == "old_name"
    assert cfg.masking.num_target_masks == 3 and cfg.masking.context_scale == (0.9, 1.0)
    assert (cfg.model.target_encoder.ema_decay, cfg.model.target_encoder.ema_end_decay) == (0.99, 0.999)
    assert cfg.data.transforms.color_jitter == 0.2 and cfg.data.transforms.horizontal_flip
    assert cfg.training.min_lr_ratio == pytest.approx(1e-3) and cfg.training.clip_grad == 1.5
    assert cfg.logging.use_tensorboard


def test_legacy_and_new_name_that_disagree_is_an_error():
    (problem,) = problems_of(minimal(experiment={"save_frequency": 3}, checkpoint={"save_frequency": 4}))
    assert "'experiment.save_frequency'" in problem and "'checkpoint.save_frequency'" in problem


@pytest.mark.parametrize("raw, words", [
    ({"model": {"predictor": {"dropout": 0.1}}}, ["model.predictor.dropout: 0.1", "Set it to 0.0"]),
    ({"logging": {"use_wandb": True}}, ["logging.use_wandb: true", "use_tensorboard"]),
    ({"distributed": {"enabled": False}}, ["'distributed' is not supported", "mlx.launch"]),
    ({"checkpoint": {"resume": "x"}}, ["checkpoint.resume", "--resume"]),
    ({"training": {"use_gradient_checkpointing": True}}, ["accumulation_steps"]),
])
def test_keys_we_cannot_honour_say_what_to_use_instead(raw, words):
    (problem,) = problems_of(minimal(**raw))
    for word in words:
        assert word in problem


# --------------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("raw, key, fix", [
    ({"training": {"lr": -1e-3}}, "training.lr", "positive"),
    ({"training": {"lr": 0}}, "training.lr", "positive"),
    ({"loss": {"hierarchy_weights": [1.0, 0.5, 0.25]}}, "loss.hierarchy_weights", "one weight per level"),
    ({"loss": {"hierarchy_weights": [0.0, 0.0]}}, "loss.hierarchy_weights", "positive sum"),
    ({"data": {"image_size": 50}}, "data.image_size", "multiple such as 48"),
    ({"masking": {"mask_scale": [0.2, 1.5]}}, "masking.mask_scale", "min <= max"),
    ({"masking": {"mask_scale": [0.3, 0.2]}}, "masking.mask_scale", "min <= max"),
    ({"masking": {"context_scale": [0.0, 1.0]}}, "masking.context_scale", "in (0, 1]"),
    ({"masking": {"num_context_masks": 2}}, "masking.num_context_masks", "set it to 1"),
    ({"masking": {"min_keep": 40}}, "masking.min_keep", "lower 'masking.min_keep'"),
    ({"data": {"batch_size": 0}}, "data.batch_size", "at least 1"),
    ({"training": {"accumulation_steps": 0}}, "training.accumulation_steps", "at least 1"),
    ({"training": {"epochs": 0}}, "training.epochs", "at least 1"),
    ({"training": {"epochs": 5, "warmup_epochs": 6}}, "training.warmup_epochs", "0 to training.epochs (5)"),
    ({"training": {"optimizer": "sgd"}}, "training.optimizer", "only adamw"),
    ({"training": {"betas": [0.9, 1.0]}}, "training.betas", "[0, 1)"),
    ({"training": {"lr_scaling": "sqrt"}}, "training.lr_scaling", "none, linear"),
    ({"training": {"clip_grad": -1.0}}, "training.clip_grad", "null for no clipping"),
    ({"data": {"dataset": "imagenet1k"}}, "data.dataset", "did you mean 'imagenet"),
    ({"data": {"dataset": "svhn"}}, "data.dataset", "cifar10, cifar100, stl10, synthetic"),
    ({"data": {"dataset": None}}, "data.dataset", "is not set"),
    ({"data": {"sampling_strategy": "balanced"}}, "data.sampling_strategy", "use_multi_dataset: true"),
    ({"data": {"dataset": None, "use_multi_dataset": True}}, "data.datasets", "is empty"),
    ({"data": {"use_multi_dataset": True, "datasets": [{"name": "cifar10"}]}}, "data.dataset", "not used when"),
    ({"data": {"dataset": None, "use_multi_dataset": True, "datasets": [{"name": "cifar10", "weight": -1}]}}, "data.datasets[0].weight", ">= 0"),
    ({"data": {"dataset": None, "use_multi_dataset": True, "datasets": [{"name": "cifar10", "weight": 0}, {"name": "stl10", "weight": 0}]}}, "data.datasets", "sum to 0"),
    ({"data": {"dataset": None, "use_multi_dataset": True, "datasets": [{"name": "svhn"}]}}, "data.datasets[0].name", "valid values"),
    ({"data": {"dataset": None, "use_multi_dataset": True, "datasets": [{"weight": 1.0}]}}, "data.datasets[0].name", "required"),
    ({"data": {"transforms": {"crop_scale": [0.3, 1.2]}}}, "data.transforms.crop_scale", "in (0, 1]"),
    ({"model": {"patch_size": 12}, "data": {"image_size": 48}}, "Patch size 12", "4, 8, 14, 16"),
    ({"model": {"encoder_type": "vit_small_patch12_224"}}, "Patch size 12", "4, 8, 14, 16"),
    ({"model": {"encoder_type": "resnet50"}}, "model.encoder_type", "vit_small_patch16_224"),
    ({"model": {"num_hierarchies": 5}}, "model.num_hierarchies", "1 to 4"),
    ({"model": {"num_hierarchies": 0}, "loss": {"hierarchy_weights": [1.0]}}, "model.num_hierarchies", "1 to 4"),
    ({"model": {"num_hierarchies": 4}}, "model.num_hierarchies", "at most 3"),  # 6x6 grid: 8x8 windows vanish
    ({"model": {"num_hierarchies": 3}}, "model.num_hierarchies", "never have a window"),  # 4x4 windows, 3x3 blocks
    ({"model": {"num_heads": 5}}, "model.embed_dim", "divisible by model.num_heads"),
    ({"model": {"predictor": {"embed_dim": 100}}}, "model.predictor.embed_dim", "divisible"),
    ({"model": {"target_encoder": {"ema_decay": 0.999, "ema_end_decay": 0.99}}}, "model.target_encoder.ema_decay", "ema_decay <= ema_end_decay"),
    ({"loss": {"type": "cosine"}}, "loss.type", "smooth_l1"),
    ({"loss": {"level_target": "mean_of_norms"}}, "loss.level_target", "did you mean 'mean_of_norm'"),
    ({"training": {"lr_schedule": "step"}}, "training.lr_schedule", "valid values are cosine, linear, constant"),
    ({"device": "tpu"}, "device", "auto, gpu, cpu"),
    ({"experiment": {"name": "a/b"}}, "experiment.name", "without slashes"),
    ({"evaluation": {"knn_k": 0}}, "evaluation.knn_k", "at least 1"),
    ({"evaluation": {"crop_fraction": 0}}, "evaluation.crop_fraction", "(0, 1]"),
    ({"evaluation": {"crop_fraction": 1.2}}, "evaluation.crop_fraction", "1.0 (the whole image)"),
    ({"checkpoint": {"keep_last_k": 0}}, "checkpoint.keep_last_k", "at least 1"),
])
def test_bad_value_names_the_key_and_the_fix(raw, key, fix):
    problems = problems_of(minimal(**raw))
    assert any(key in p and fix in p for p in problems), problems


@pytest.mark.parametrize("override", [
    "model.num_heads=0", "model.predictor.num_heads=0", "model.patch_size=0", "model.embed_dim=-8", "data.image_size=0",
    "model.num_hierarchies=-1", "masking.mask_scale=[0, 0]", "masking.aspect_ratio=[-1, 2]", "training.betas=[0.9, 0.999, 0.5]",
])
def test_degenerate_values_are_errors_not_crashes(override):
    assert problems_of(MINIMAL, [override])


def test_hierarchy_too_deep_for_224_16():
    (problem,) = problems_of({"data": {"dataset": "imagenet100"}, "model": {"num_hierarchies": 4}})
    assert "8x8 windows" in problem and "14x14 grid" in problem


@pytest.mark.parametrize("raw, words", [
    ({"training": {"lr": "fast"}}, ["'training.lr' must be a number", "'fast'"]),
    ({"training": {"epochs": 2.5}}, ["'training.epochs' must be a whole number"]),
    ({"data": {"transforms": {"horizontal_flip": "sometimes"}}}, ["must be true or false"]),
    ({"data": {"transforms": {"crop_scale": [0.3, 0.6, 1.0]}}}, ["list of 2 numbers"]),
    ({"model": 3}, ["'model' must be a section"]),
    ({"training": {"lr": float("nan")}}, ["'training.lr' must be a number"]),
])
def test_wrong_types_are_errors(raw, words):
    problems = problems_of(minimal(**raw))
    for word in words:
        assert any(word in p for p in problems), problems


def test_a_section_with_every_key_commented_out_takes_the_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  dataset: synthetic\nlogging:\n  # use_tensorboard: true\ncheckpoint:\n")
    cfg = load_config(path)
    assert cfg.logging.log_frequency == 50 and cfg.checkpoint.keep_last_k == 3


def test_file_errors_are_config_errors(tmp_path):
    assert "does not exist" in problems_of(tmp_path / "missing.yaml")[0]
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    assert "not valid YAML" in problems_of(tmp_path / "bad.yaml")[0]
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert "mapping of sections" in problems_of(tmp_path / "list.yaml")[0]
    assert issubclass(ConfigError, ValueError)


# ---------------------------------------------------------------------------------- overrides


def test_overrides_set_nested_keys_lists_and_types():
    cfg = load_config(MINIMAL, [
        "training.lr=5e-4", "training.epochs=3", "training.warmup_epochs=1",
        "model.predictor.depth=2", "masking.mask_scale=[0.1, 0.2]", "data.transforms.horizontal_flip=true",
        "device=cpu", "experiment.name=run 2",
    ])
    assert cfg.training.lr == 5e-4 and cfg.training.epochs == 3 and cfg.model.predictor.depth == 2
    assert cfg.masking.mask_scale == (0.1, 0.2) and cfg.data.transforms.horizontal_flip is True
    assert cfg.device == "cpu" and cfg.experiment.name == "run 2"


def test_overrides_reach_into_lists_and_use_legacy_names():
    raw = minimal(data={"dataset": None, "use_multi_dataset": True, "datasets": [{"name": "synthetic"}, {"name": "cifar10"}]})
    cfg = load_config(raw, ["data.datasets.1.weight=0.25", "seed=9", "data.datasets.0.path=/tmp/x"])
    assert cfg.data.datasets[1].weight == 0.25 and cfg.data.datasets[0].path == "/tmp/x"
    assert cfg.experiment.seed == 9


def test_image_frequency_is_a_number_of_epochs_or_unset():
    assert load_config(MINIMAL).logging.image_frequency is None
    assert load_config(MINIMAL, ["logging.image_frequency=3"]).logging.image_frequency == 3
    assert "'logging.image_frequency' is 0" in problems_of(MINIMAL, ["logging.image_frequency=0"])[0]


def test_overrides_are_checked_like_the_file():
    assert problems_of(MINIMAL, ["training.learning_rate=1e-3"]) == ["Unknown config key 'training.learning_rate'; did you mean 'training.lr'?"]
    assert "must be a whole number" in problems_of(MINIMAL, ["training.epochs=many"])[0]
    assert "must be a number" in problems_of(MINIMAL, ["training.lr=[1, 2]"])[0]
    assert "key.path=value" in problems_of(MINIMAL, ["training.lr"])[0]
    assert "single value, not a section" in problems_of(MINIMAL, ["data.dataset.name=x"])[0]
    assert "index it with 0..0" in problems_of(minimal(data={"dataset": None, "use_multi_dataset": True, "datasets": [{"name": "cifar10"}]}), ["data.datasets.3.weight=1"])[0]
    assert "logging.log_gradients: true" in problems_of(MINIMAL, ["logging.log_gradients=true"])[0]


# --------------------------------------------------------------------------- round trip, sizes


def test_round_trip_dict_config_dict():
    cfg = load_config(ROOT / "configs/imagenet100_multi_dataset.yaml", ["training.clip_grad=1.0", "model.embed_dim=192", "model.num_heads=3"])
    as_dict = config_to_dict(cfg)
    assert config_to_dict(load_config(as_dict)) == as_dict
    assert load_config(as_dict) == cfg
    assert yaml.safe_load(config_to_yaml(cfg)) == as_dict


def test_defaults_are_the_ijepa_reference_values():
    cfg = load_config({"data": {"dataset": "imagenet100"}})
    assert (cfg.masking.mask_scale, cfg.masking.aspect_ratio, cfg.masking.context_scale) == ((0.15, 0.2), (0.75, 1.5), (0.85, 1.0))
    assert (cfg.masking.num_target_masks, cfg.masking.min_keep) == (4, 10)
    t = cfg.training
    assert (t.optimizer, t.lr, t.lr * t.warmup_lr_ratio, t.lr * t.min_lr_ratio) == ("adamw", 1e-3, pytest.approx(2e-4), pytest.approx(1e-6))
    assert (t.weight_decay, t.weight_decay_end) == (0.04, 0.4)
    assert (cfg.model.target_encoder.ema_decay, cfg.model.target_encoder.ema_end_decay) == (0.996, 1.0)
    assert cfg.loss.type == "smooth_l1" and cfg.loss.hierarchy_weights == [1.0, 0.5, 0.25]
    assert cfg.data.transforms.crop_scale == (0.3, 1.0) and not cfg.data.transforms.horizontal_flip
    assert resolve_predictor(cfg) == dict(embed_dim=384, depth=6, num_heads=6, mlp_ratio=4.0)
    assert vicreg_weights(cfg) == (0.0, 0.0)


def test_hierarchy_weights_follow_num_hierarchies_when_not_given():
    assert load_config(MINIMAL).loss.hierarchy_weights == [1.0, 0.5]
    assert load_config(minimal(loss={"hierarchy_weights": 2.0})).loss.hierarchy_weights == [2.0, 2.0]


def test_zero_clip_grad_means_no_clipping_and_spellings_are_normalised():
    cfg = load_config(minimal(training={"clip_grad": 0, "optimizer": "AdamW"}, loss={"type": "huber"}, device="cuda"))
    assert cfg.training.clip_grad is None and cfg.training.optimizer == "adamw"
    assert cfg.loss.type == "smooth_l1" and cfg.device == "gpu"


@pytest.mark.parametrize("name, image_size, expected", [
    ("vit_small_patch16_224", 224, dict(embed_dim=384, depth=12, num_heads=6, patch_size=16, img_size=224)),
    ("vit_small_patch16_224", 96, dict(embed_dim=384, depth=12, num_heads=6, patch_size=16, img_size=96)),
    ("vit_tiny", 64, dict(embed_dim=192, depth=12, num_heads=3, patch_size=16, img_size=64)),
    ("vit_base_patch14", 224, dict(embed_dim=768, depth=12, num_heads=12, patch_size=14, img_size=224)),
    ("vit_large_patch16_384", 224, dict(embed_dim=1024, depth=24, num_heads=16, patch_size=16, img_size=224)),
    ("vit_tiny_patch8", 48, dict(embed_dim=192, depth=12, num_heads=3, patch_size=8, img_size=48)),
])
def test_resolve_encoder_names(name, image_size, expected):
    cfg = load_config({"data": {"dataset": "synthetic", "image_size": image_size}, "model": {"encoder_type": name, "num_hierarchies": 1}})
    assert resolve_encoder(cfg) == dict(expected, mlp_ratio=4.0)
    assert resolve_encoder(cfg.model, image_size=image_size) == resolve_encoder(cfg)


def test_explicit_dimensions_override_the_preset():
    cfg = load_config(ROOT / "configs/quickstart.yaml", ["model.embed_dim=96", "model.mlp_ratio=2.0", "model.patch_size=16", "data.image_size=96"])
    enc = resolve_encoder(cfg)
    assert (enc["embed_dim"], enc["depth"], enc["num_heads"], enc["mlp_ratio"], enc["patch_size"]) == (96, 4, 3, 2.0, 16)
    assert grid_size(cfg) == 6


def test_resolve_encoder_rejects_unknown_names():
    with pytest.raises(ConfigError, match="vit_small_patch16_224"):
        resolve_encoder(ModelConfig(encoder_type="deit_s"), image_size=224)


def test_linear_lr_scaling_uses_the_global_batch():
    cfg = load_config(MINIMAL, ["training.lr_scaling=linear", "data.batch_size=32", "training.accumulation_steps=2", "training.lr=1e-3"])
    assert scaled_lr(cfg, world_size=2) == pytest.approx(1e-3 * 128 / 256)
    assert scaled_lr(load_config(MINIMAL)) == 1e-3


# ------------------------------------------------------------------------------------- docs


def test_docs_describe_every_key():
    docs = (ROOT / "docs/config.md").read_text()
    leaves = [p for p in _schema_paths() if not any(q.startswith(p + ".") or q.startswith(p + "[]") for q in _schema_paths())]
    missing = [p for p in leaves if f"`{p}`" not in docs]
    missing += [k for k in [*RENAMED_KEYS, *FIXED_KEYS, *UNSUPPORTED_KEYS] if f"`{k}`" not in docs]
    assert not missing, f"docs/config.md does not describe {missing}"


def test_every_problem_is_reported_in_one_pass():
    """A value that cannot be read keeps its default, so the other checks still run."""
    with pytest.raises(ConfigError) as caught:
        load_config({"data": {"dataset": "synthetic", "batch_size": "abc"}, "training": {"epochs": -1},
                     "model": {"dpth": 3}})
    problems = caught.value.problems
    assert len(problems) == 3
    assert any("data.batch_size" in p and "whole number" in p for p in problems)
    assert any("training.epochs" in p and "at least 1" in p for p in problems)
    assert any("model.dpth" in p and "model.depth" in p for p in problems)


def test_yaml_syntax_errors_name_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  dataset: synthetic\n  image_size: [1\nmodel: {}\n")
    with pytest.raises(ConfigError, match="at line 4, column 6"):
        load_config(bad)


def test_misspelled_other_names_still_find_the_key():
    with pytest.raises(ConfigError, match="'training.learnign_rate'; did you mean 'training.lr'"):
        load_config({"data": {"dataset": "synthetic"}, "training": {"learnign_rate": 3e-4}})


def test_pytorch_gradient_accumulation_steps_is_mapped():
    cfg = load_config({"data": {"dataset": "synthetic"}, "training": {"gradient_accumulation_steps": 4}})
    assert cfg.training.accumulation_steps == 4

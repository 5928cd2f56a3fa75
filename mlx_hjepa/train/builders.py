"""From a validated Config to the objects a run needs: model, masks, data, schedules, step options."""

import mlx.core as mx

from .. import config as C
from ..masks import MultiBlockMaskSampler
from ..models import HJEPA, VisionTransformer
from .schedules import Schedules
from .step import StepOptions

EVAL_SPLITS = {"synthetic": ("train", "val"), "cifar10": ("train", "test"), "cifar100": ("train", "test"),
               "stl10": ("train", "test"), "imagenet": ("train", "val"), "imagenet100": ("train", "val"),
               "imagefolder": ("train", "val"), "fashion_mnist": ("train", "test"), "mnist": ("train", "test")}


def build_model(cfg):
    mx.random.seed(cfg.experiment.seed)
    enc = C.resolve_encoder(cfg)
    pred = C.resolve_predictor(cfg)
    encoder = VisionTransformer(img_size=enc["img_size"], patch_size=enc["patch_size"], embed_dim=enc["embed_dim"],
                                depth=enc["depth"], num_heads=enc["num_heads"], mlp_ratio=enc["mlp_ratio"],
                                act=cfg.model.activation)
    return HJEPA(encoder, pred["embed_dim"], pred["depth"], pred["num_heads"], pred["mlp_ratio"],
                 cfg.model.num_hierarchies)


def build_mask_sampler(cfg, model):
    m = cfg.masking
    return MultiBlockMaskSampler(model.grid_size, num_targets=m.num_target_masks, target_scale=tuple(m.mask_scale),
                                 target_aspect=tuple(m.aspect_ratio), context_scale=tuple(m.context_scale),
                                 min_keep=m.min_keep, num_hierarchies=model.num_hierarchies, seed=cfg.experiment.seed)


def source_options(cfg, name):
    """Synthetic data is drawn from experiment.seed; files need no options."""
    return {"seed": cfg.experiment.seed} if name == "synthetic" else {}


def build_train_dataset(cfg):
    from ..data import WeightedMultiDataset, build_dataset, build_multi_dataset

    d, t = cfg.data, cfg.data.transforms
    aug = dict(image_size=d.image_size, crop_scale=tuple(t.crop_scale), color_jitter=t.color_jitter,
               horizontal_flip=t.horizontal_flip)
    if d.use_multi_dataset:
        entries = [{"name": e.name, "weight": e.weight, "path": e.path or d.data_path, **source_options(cfg, e.name)}
                   for e in d.datasets]
        return build_multi_dataset(entries, data_path=d.data_path, split="train", sampling_strategy=d.sampling_strategy,
                                   samples_per_epoch=d.samples_per_epoch, **aug)
    dataset = build_dataset(d.dataset, data_path=d.data_path, split="train", **aug, **source_options(cfg, d.dataset))
    if d.samples_per_epoch is not None:  # a fresh random subset of the one dataset every epoch
        dataset = WeightedMultiDataset([dataset], [1.0], "balanced", d.samples_per_epoch, transform=dataset.transform,
                                       name=dataset.name)
    return dataset


def eval_source(cfg):
    """(dataset name, path) the in-run k-NN uses: the dataset, or the first one of a mix."""
    d = cfg.data
    if d.use_multi_dataset:
        return d.datasets[0].name, d.datasets[0].path or d.data_path
    return d.dataset, d.data_path


def build_eval_datasets(cfg):
    """Labelled (train, val) splits, both through the eval transform, for the in-run k-NN."""
    from ..data import JEPAEvalTransform, build_dataset

    name, path = eval_source(cfg)
    train_split, val_split = EVAL_SPLITS[name]
    transform = JEPAEvalTransform(cfg.data.image_size)
    options = source_options(cfg, name)
    return (build_dataset(name, data_path=path, split=train_split, transform=transform, **options),
            build_dataset(name, data_path=path, split=val_split, transform=transform, **options))


def build_schedules(cfg, steps_per_epoch, world_size=1):
    t, ema = cfg.training, cfg.model.target_encoder
    total = max(1, t.epochs * steps_per_epoch)
    lr = C.scaled_lr(cfg, world_size)
    warmup = int(round(t.warmup_epochs * steps_per_epoch))
    if t.lr_schedule == "constant":
        min_lr = lr
    else:
        min_lr = lr * t.min_lr_ratio
    return Schedules(lr=lr, warmup_lr=lr * t.warmup_lr_ratio, min_lr=min_lr, warmup_steps=warmup,
                     total_steps=total, weight_decay=t.weight_decay, weight_decay_end=t.weight_decay_end,
                     ema_start=ema.ema_decay, ema_end=ema.ema_end_decay,
                     ema_steps=ema.ema_anneal_end_step or total, lr_decay=t.lr_schedule)


def build_step_options(cfg):
    t = cfg.training
    variance, covariance = C.vicreg_weights(cfg)
    return StepOptions(hierarchy_weights=tuple(cfg.loss.hierarchy_weights),
                       loss_type={"smoothl1": "smooth_l1"}.get(cfg.loss.type, cfg.loss.type),
                       normalize_embeddings=cfg.loss.normalize_embeddings, variance_weight=variance, covariance_weight=covariance, clip_grad=t.clip_grad or 0.0,
                       accumulation_steps=t.accumulation_steps, bf16=t.use_amp, betas=tuple(t.betas))

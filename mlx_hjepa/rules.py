"""Shared rules and constants: the floor every layer may import. Pure Python, no MLX, no numpy.

Each name here has exactly one definition; config.py validates against these, models/ builds
from them, data/ and eval/ name datasets and splits with them.
"""

import re

# Encoder presets: timm's ViT sizes (mlp_ratio 4 for all).
PRESETS = {
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large": dict(embed_dim=1024, depth=24, num_heads=16),
}
PATCH_SIZES = (2, 4, 8, 14, 16)  # 2 and 4: fine grids on small images (28-32 px)
DEFAULT_PATCH_SIZE = 16
DEFAULT_IMAGE_SIZE = 224
MAX_HIERARCHIES = 4  # level l pools 2^l x 2^l windows: 8x8 at most

# Pixel normalisation (ImageNet statistics, as timm's and I-JEPA's transforms use).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Evaluation reads images resized to image_size / EVAL_CROP_FRACTION and centre-cropped (the
# ImageNet convention, matching RandomResizedCrop training); 1.0 reads the whole image.
EVAL_CROP_FRACTION = 0.875

# Datasets by name, and the (bank, query) splits an evaluation of each one uses.
EVAL_SPLITS = {
    "imagenet": ("train", "val"),
    "imagenet100": ("train", "val"),
    "imagefolder": ("train", "val"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test"),
    "synthetic": ("train", "val"),
    "fashion_mnist": ("train", "test"),
    "mnist": ("train", "test"),
}
DATASET_NAMES = tuple(EVAL_SPLITS)
# The splits each dataset has (None: any folder name under the root), the split pretraining
# reads unless a config names one (STL-10: its 5k labelled and 100k unlabeled images), and
# the splits that get the training augmentations.
SPLITS = {
    "imagenet": ("train", "val"),
    "imagenet100": ("train", "val"),
    "imagefolder": None,
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
    "synthetic": ("train", "val"),
    "fashion_mnist": ("train", "test"),
    "mnist": ("train", "test"),
}
PRETRAIN_SPLITS = {"stl10": "train+unlabeled"}
AUGMENTED_SPLITS = ("train", "unlabeled", "train+unlabeled")
FOLDER_DATASETS = ("imagenet", "imagenet100", "imagefolder")  # class folders on disk: data.class_list picks them


def pretrain_split(name):
    """The split pretraining reads from dataset `name` when the config names none."""
    return PRETRAIN_SPLITS.get(name, "train")


# Multi-dataset sampling. Only "weighted" draws by weight: "balanced" takes the same count from
# every dataset and "concat" every image once, so a weight there would mean nothing.
SAMPLING_STRATEGIES = ("weighted", "balanced", "concat")
WEIGHTED_STRATEGIES = ("weighted",)
DEFAULT_DATASET_WEIGHT = 1.0


def weights_problem(strategy, weights):
    """One sentence when `weights` mean nothing under `strategy` (None when they are fine)."""
    if strategy in WEIGHTED_STRATEGIES or all(float(w) == DEFAULT_DATASET_WEIGHT for w in weights):
        return None
    what = "draws the same number of images from every dataset" if strategy == "balanced" else \
        "uses every image of every dataset once"
    return (f"sampling strategy '{strategy}' {what}, so dataset weights {[float(w) for w in weights]} would be ignored; "
            "remove the weights or use sampling_strategy: weighted.")

# Loss and activation names the code implements; LOSS_SPELLINGS maps what configs may say.
LOSS_TYPES = ("smooth_l1", "mse")
LOSS_SPELLINGS = {"smooth_l1": "smooth_l1", "smoothl1": "smooth_l1", "huber": "smooth_l1", "mse": "mse", "l2": "mse"}
# How a coarser level's target is pooled: norm_of_mean layer-norms the window's mean token (the
# default); mean_of_norm averages the layer-normed tokens, the same operation the prediction side
# applies to the predictor's per-token outputs, so a perfect level-0 prediction is perfect at every level.
LEVEL_TARGETS = ("norm_of_mean", "mean_of_norm")
ACTIVATIONS = ("auto", "gelu", "fast_gelu")  # auto: fast_gelu on the CPU backend, exact gelu on a GPU

_MODEL_NAME = re.compile(r"(vit_[a-z]+?)(?:_patch(\d+))?(?:_(\d+))?")


def parse_model_name(name):
    """'vit_small_patch16_224' -> ('vit_small', 16, 224); 'vit_tiny' -> ('vit_tiny', None, None)."""
    match = _MODEL_NAME.fullmatch(name.strip().lower())
    if match is None or match[1] not in PRESETS:
        sizes = "|".join(p.removeprefix("vit_") for p in PRESETS)
        raise ValueError(f"Unknown encoder '{name}'; use vit_{{{sizes}}}, optionally with a patch and image size "
                         "as in timm (e.g. vit_small_patch16_224).")
    preset, patch, size = match.groups()
    return preset, (int(patch) if patch else None), (int(size) if size else None)


def encoder_config(name, img_size=None, patch_size=None, embed_dim=None, depth=None, num_heads=None,
                   mlp_ratio=None, act="gelu"):
    """The VisionTransformer keyword arguments a preset or timm-style name stands for; explicit
    values win over the name's. The image size in a name (the 224 of ..._224) is the fallback only."""
    preset, name_patch, name_img = parse_model_name(name)
    dims = PRESETS[preset]

    def first(*values):
        return next(v for v in values if v is not None)

    return dict(img_size=first(img_size, name_img, DEFAULT_IMAGE_SIZE),
                patch_size=first(patch_size, name_patch, DEFAULT_PATCH_SIZE),
                embed_dim=first(embed_dim, dims["embed_dim"]), depth=first(depth, dims["depth"]),
                num_heads=first(num_heads, dims["num_heads"]), mlp_ratio=first(mlp_ratio, 4.0), act=act)


def check_patch_size(patch_size):
    """Raise ValueError unless the patch size is one the encoder supports."""
    if patch_size not in PATCH_SIZES:
        raise ValueError(f"Patch size {patch_size} is not supported; use one of {', '.join(map(str, PATCH_SIZES))}.")


def check_hierarchies(num_hierarchies, grid_side):
    """Raise ValueError unless `num_hierarchies` levels fit a patch grid whose shorter side is `grid_side`."""
    if not 1 <= num_hierarchies <= MAX_HIERARCHIES:
        raise ValueError(f"num_hierarchies is {num_hierarchies}; use 1 to {MAX_HIERARCHIES} (1 is plain I-JEPA).")
    window = 2 ** (num_hierarchies - 1)
    if window > grid_side:
        raise ValueError(f"num_hierarchies ({num_hierarchies}) is too many for a {grid_side}x{grid_side} patch grid: "
                         f"the coarsest level pools {window}x{window} windows; use at most {grid_side.bit_length()}.")

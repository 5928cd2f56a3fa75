"""Data pipelines on mlx-data: ImageNet / ImageNet-100 / image folders, CIFAR-10/100, STL-10,
built-in synthetic data, JEPA transforms and weighted multi-dataset sampling.

    train = build_dataset("imagenet100", data_path="./data/imagenet", split="train", image_size=224)
    loader = build_dataloader(train, batch_size=32, num_workers=6, shuffle=True)
    for batch in loader:  # {"image": uint8 (B,H,W,3), "label": int32 (B,), "dataset": int32 (B,), "index": int64 (B,)}
        ...

The command line (``python -m mlx_hjepa.data``: download, verify, ...) lives in ``__main__``.
"""

from ..rules import DATASET_NAMES
from .build import (build_dataset, build_eval_datasets, build_multi_dataset, build_train_dataset, default_transform,
                    build_train_loader, eval_source, source_options)
from .cifar import CIFARDataset
from .folder import IMAGENET100_CLASSES, ImageFolderDataset, ImageNet100Dataset, ImageNetDataset
from .loader import DataLoader, build_dataloader
from .mixing import WeightedMultiDataset
from .sources import ArrayDataset, ImageSource, UnreadableImageError
from .stl10 import STL10Dataset
from .synthetic import SyntheticDataset
from .transforms import JEPAEvalTransform, JEPATransform, random_resized_crop_params

__all__ = [
    "DATASET_NAMES", "IMAGENET100_CLASSES", "ArrayDataset", "CIFARDataset", "DataLoader", "ImageFolderDataset",
    "ImageNet100Dataset", "ImageNetDataset", "ImageSource", "JEPAEvalTransform", "JEPATransform", "STL10Dataset",
    "SyntheticDataset", "UnreadableImageError", "WeightedMultiDataset", "build_dataloader", "build_dataset",
    "build_multi_dataset", "default_transform", "build_train_dataset", "build_train_loader", "build_eval_datasets", "eval_source", "source_options", "random_resized_crop_params",
]

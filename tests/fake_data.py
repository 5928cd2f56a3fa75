"""Tiny stand-ins for real datasets, in their official on-disk formats."""

import pickle

import numpy as np
from PIL import Image

from mlx_hjepa.data import IMAGENET100_CLASSES


def fake_imagenet(root, classes=None, per_class=2, size=(40, 30)):
    """root/{train,val}/<wnid>/*.JPEG for the first two CMC synsets (by default)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in classes or sorted(IMAGENET100_CLASSES)[:2]:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


def fake_cifar(root, name="cifar100", rows=4):
    rng = np.random.default_rng(1)
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    members = ["data_batch_%d" % i for i in range(1, 6)] + ["test_batch"] if name == "cifar10" else ["train", "test"]
    label_key, classes = (b"labels", 10) if name == "cifar10" else (b"fine_labels", 100)
    for member in members:
        batch = {label_key: rng.integers(0, classes, rows).tolist(),
                 b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8)}
        (folder / member).write_bytes(pickle.dumps(batch, protocol=2))
    meta = ({b"label_names": [b"c%d" % i for i in range(10)]} if name == "cifar10"
            else {b"fine_label_names": [b"f%d" % i for i in range(100)]})
    (folder / ("batches.meta" if name == "cifar10" else "meta")).write_bytes(pickle.dumps(meta, protocol=2))
    return root


def fake_stl10(root, rows=3):
    rng = np.random.default_rng(2)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for part in ("train", "test", "unlabeled"):
        images = rng.integers(0, 256, (rows, 3, 96, 96), dtype=np.uint8)
        (folder / f"{part}_X.bin").write_bytes(images.tobytes())
        if part != "unlabeled":
            (folder / f"{part}_y.bin").write_bytes(bytes(rng.integers(1, 11, rows).tolist()))
    return root

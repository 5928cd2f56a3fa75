"""MNIST and Fashion-MNIST from the standard IDX files, gzipped or not.

Accepted under ``data_path``: the four files themselves (``train-images-idx3-ubyte[.gz]``,
``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``)
or a ``fashion-mnist/`` / ``mnist/`` folder holding them (what ``python -m mlx_hjepa.data
download`` writes). Debian's ``dataset-fashion-mnist`` package installs them in
``/usr/share/datasets/fashion-mnist``. Images are 28x28 greyscale, held as one uint8 array
(N, 28, 28, 3) with the grey value repeated in the three channels.
"""

import gzip
import os

import numpy as np

from .sources import ArrayDataset

FOLDERS = {"fashion_mnist": "fashion-mnist", "mnist": "mnist"}
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
COUNTS = {"train": 60_000, "test": 10_000}
CLASSES = {
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "mnist": [str(d) for d in range(10)],
}
# IDX magic: two zero bytes, the element type (0x08 = unsigned byte), the number of dimensions.
_UBYTE = 0x08


def file_names(split):
    """(images file, labels file) of ``split`` without the .gz suffix."""
    prefix = SPLIT_PREFIX[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def how_to_get(name):
    """The sentence that tells a user where the files come from."""
    get = f"`python -m mlx_hjepa.data download {name} --root DIR`"
    if name == "fashion_mnist":
        return f"get them with {get} or `apt-get install dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist)"
    return f"get them with {get}"


def find_file(name, data_path, base):
    """Path of ``base`` or ``base.gz`` in ``data_path`` or its ``FOLDERS[name]`` subfolder, else raise."""
    data_path = os.fspath(data_path)
    for directory in (data_path, os.path.join(data_path, FOLDERS[name])):
        for candidate in (base, base + ".gz"):
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(f"{base}[.gz] is not in {data_path!r} or its {FOLDERS[name]}/ folder; {how_to_get(name)}.")


def read_idx(path):
    """The uint8 array stored in IDX file ``path`` (gzip-compressed when it ends in .gz)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; a truncated .gz raises EOFError
        raise ValueError(f"{path} cannot be read ({e}); delete it and get it again.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE or data[3] == 0:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad header); delete it and get it again.")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)) if len(data) >= header else ()
    if len(data) != header + int(np.prod(shape, dtype=np.int64)) or not shape:
        raise ValueError(f"{path} holds {len(data):,} bytes, not the size its header {shape} declares; "
                         "delete it and get it again.")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def load_idx(name, data_path, split):
    """Return (images uint8 (N, 28, 28, 3), labels int32 (N,), class names) of mnist/fashion_mnist ``split``."""
    if split not in SPLIT_PREFIX:
        raise ValueError(f"{name} has splits train and test, not {split!r}.")
    images_base, labels_base = file_names(split)
    images_path, labels_path = find_file(name, data_path, images_base), find_file(name, data_path, labels_base)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise ValueError(f"{images_path} holds shape {images.shape}, not (N, rows, cols) images; delete it and get it again.")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{labels_path} holds {labels.shape} labels for {len(images):,} images in {images_path}; "
                         "delete both and get them again.")
    if len(labels) and labels.max() >= len(CLASSES[name]):
        raise ValueError(f"{labels_path} holds label {labels.max()}, outside 0..{len(CLASSES[name]) - 1}; "
                         "delete it and get it again.")
    rgb = np.ascontiguousarray(np.repeat(images[..., None], 3, axis=3))
    return rgb, labels.astype(np.int32), list(CLASSES[name])


class IDXDataset(ArrayDataset):
    """MNIST (``name="mnist"``) or Fashion-MNIST (``name="fashion_mnist"``); splits train / test (val reads test)."""

    def __init__(self, data_path="./data", split="train", name="fashion_mnist", transform=None):
        if name not in FOLDERS:
            raise ValueError(f"IDXDataset name must be one of {sorted(FOLDERS)}, not {name!r}.")
        images, labels, classes = load_idx(name, data_path, "test" if split == "val" else split)
        super().__init__(images, labels, classes, name=name, transform=transform)
        self.split = split

"""STL-10 from the official binary files (``stl10_binary/{train,test,unlabeled}_X.bin``).

Each image is three 96x96 planes stored column-major; labels are bytes 1..10 (mapped to
0..9). The image files are memory-mapped as uint8, so the 100k unlabeled images (2.8 GB)
are read on demand and never re-encoded. Unlabeled samples have label -1.
"""

import os

import numpy as np

from ..rules import SPLITS as DATASET_SPLITS
from .sources import ImageSource, encode_ppm

SPLITS = {split: split.split("+") for split in DATASET_SPLITS["stl10"]}  # split -> the files it reads
CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
FOLDER = "stl10_binary"


def _stl_folder(data_path):
    for folder in (os.path.join(data_path, FOLDER), data_path):
        if os.path.isfile(os.path.join(folder, "test_X.bin")) or os.path.isfile(os.path.join(folder, "train_X.bin")):
            return folder
    raise FileNotFoundError(
        f"no STL-10 data in {data_path!r}: expected {os.path.join(data_path, FOLDER)}/ holding "
        f"train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin (get them with "
        f"`python -m mlx_hjepa.data download stl10 --root {data_path}`)."
    )


def load_stl10_part(folder, part):
    """Return (images: uint8 memmap (N, 3, 96, 96) in file order [c][x][y], labels int32 (N,))."""
    image_path = os.path.join(folder, f"{part}_X.bin")
    if not os.path.isfile(image_path):
        raise FileNotFoundError(f"STL-10 file {image_path!r} is missing; re-download or re-extract "
                                "stl10_binary.tar.gz.")
    if os.path.getsize(image_path) == 0:  # np.memmap refuses empty files
        planes = np.zeros(0, np.uint8)
    else:
        planes = np.memmap(image_path, dtype=np.uint8, mode="r")
    if planes.size % IMAGE_BYTES:
        raise ValueError(f"{image_path} is truncated ({planes.size} bytes is not a whole number of 96x96 images).")
    planes = planes.reshape(-1, 3, SIDE, SIDE)
    if part == "unlabeled":
        return planes, np.full(len(planes), -1, np.int32)
    labels = np.fromfile(os.path.join(folder, f"{part}_y.bin"), dtype=np.uint8).astype(np.int32) - 1
    if len(labels) != len(planes) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise ValueError(f"STL-10 {part}_y.bin does not hold one label in 1..10 per image of {image_path}.")
    return planes, labels


class STL10Dataset(ImageSource):
    """STL-10; splits ``train`` (5k labelled), ``test`` (8k), ``unlabeled`` (100k), ``train+unlabeled``."""

    image_shape = (SIDE, SIDE, 3)

    def __init__(self, data_path="./data", split="train", transform=None, name="stl10"):
        if split == "val":
            split = "test"
        if split not in SPLITS:
            raise ValueError(f"stl10 has splits {sorted(SPLITS)}, not {split!r}.")
        folder = _stl_folder(os.fspath(data_path))
        parts = [load_stl10_part(folder, part) for part in SPLITS[split]]
        self.parts = [planes for planes, _ in parts]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.labels = np.concatenate([labels for _, labels in parts])
        self.classes = list(CLASSES)
        self.name, self.split, self.transform = name, split, transform

    def image(self, index):
        """Image ``index`` as uint8 (96, 96, 3), rows first (the file stores columns first)."""
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return np.ascontiguousarray(self.parts[part][index - self.offsets[part]].transpose(2, 1, 0))

    def read(self, index, safe=False):
        return encode_ppm(self.image(index))

    def __getitem__(self, index):
        return {"image": self.image(int(index)), "label": int(self.labels[index])}

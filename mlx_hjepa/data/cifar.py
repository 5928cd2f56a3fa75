"""CIFAR-10 and CIFAR-100 from the official python archives, with no pickle code execution.

Accepted under ``data_path``: the extracted folder (``cifar-10-batches-py/``,
``cifar-100-python/``) or the untouched archive (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``), read in memory. The pickles are loaded by an unpickler
that resolves only the numpy globals an array pickle needs; anything else is refused.
Images are held as one uint8 array (N, 32, 32, 3).
"""

import io
import os
import pickle
import tarfile
from typing import NamedTuple

import numpy as np

from .sources import ArrayDataset

_ARRAY_REDUCERS = {
    # np.ndarray pickles as _reconstruct + setstate (protocol <= 4) or _frombuffer (protocol 5);
    # the module name moved from numpy.core to numpy._core in numpy 2.
    "_reconstruct": np.empty(0).__reduce__()[0],
    "_frombuffer": np.empty(0).__reduce_ex__(5)[0],
}


def _latin1_bytes(text, encoding="latin1"):
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(text, "latin1").
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        if module.split(".")[0] == "numpy":
            if name in _ARRAY_REDUCERS and module.endswith(("multiarray", "numeric")):
                return _ARRAY_REDUCERS[name]
            if name == "ndarray":
                return np.ndarray
            if name == "dtype":
                return np.dtype
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")


def load_pickle(data):
    """Unpickle CIFAR bytes allowing only plain containers, bytes/str/numbers and numpy arrays."""
    return _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()


class Layout(NamedTuple):
    """Where one CIFAR variant keeps its files and which pickle keys hold what."""

    folder: str  # the extracted folder
    archive: str  # the official .tar.gz
    splits: dict  # split -> member files
    meta: str  # member holding the class names
    names_key: bytes
    labels_key: bytes


LAYOUT = {
    "cifar10": Layout("cifar-10-batches-py", "cifar-10-python.tar.gz",
                      {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                      "batches.meta", b"label_names", b"labels"),
    "cifar100": Layout("cifar-100-python", "cifar-100-python.tar.gz",
                       {"train": ["train"], "test": ["test"]}, "meta", b"fine_label_names", b"fine_labels"),
}


def _member_reader(data_path, folder, archive):
    """Return read(name) -> bytes over the extracted folder or the .tar.gz, whichever exists."""
    for directory in (os.path.join(data_path, folder), data_path):
        if os.path.isfile(os.path.join(directory, "batches.meta" if "10-" in folder else "meta")):
            return lambda name: open(os.path.join(directory, name), "rb").read()
    archive_path = os.path.join(data_path, archive)
    if os.path.isfile(archive_path):
        tar = tarfile.open(archive_path, "r:gz")
        members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
        return lambda name: tar.extractfile(members[name]).read()
    raise FileNotFoundError(
        f"no CIFAR data in {data_path!r}: expected {os.path.join(data_path, folder)}/ or "
        f"{archive_path} (get it with `python -m mlx_hjepa.data download "
        f"{'cifar10' if '10-' in folder else 'cifar100'} --root {data_path}`)."
    )


def load_cifar(name, data_path, split):
    """Return (images uint8 (N, 32, 32, 3), labels int32 (N,), class names) for cifar10/cifar100."""
    folder, archive, splits, meta_name, names_key, labels_key = LAYOUT[name]
    if split not in splits:
        raise ValueError(f"{name} has splits {sorted(splits)}, not {split!r}.")
    read = _member_reader(os.fspath(data_path), folder, archive)
    classes = [c.decode() for c in load_pickle(read(meta_name))[names_key]]
    images, labels = [], []
    for member in splits[split]:
        batch = load_pickle(read(member))
        data = np.asarray(batch[b"data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{name} {member}: expected uint8 (N, 3072) data, got {data.dtype} {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[labels_key], dtype=np.int32))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), classes


class CIFARDataset(ArrayDataset):
    """CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``name="cifar100"``, fine labels); splits train / test."""

    def __init__(self, data_path="./data", split="train", name="cifar10", transform=None):
        if name not in LAYOUT:
            raise ValueError(f"CIFARDataset name must be one of {sorted(LAYOUT)}, not {name!r}.")
        images, labels, classes = load_cifar(name, data_path, "test" if split == "val" else split)
        super().__init__(images, labels, classes, name=name, transform=transform)
        self.split = split

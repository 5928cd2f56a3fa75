"""Check a dataset on disk before training on it: layout, classes, image counts, free space, decodes.

It walks the folders and files itself rather than building the dataset classes, so it
can say what is wrong with a tree that the loaders would refuse. Every failed check
carries one sentence saying how to fix it.
"""

import importlib.resources
import os
import pickle
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KNOWN_COUNTS = {
    "imagenet": {"train": 1_281_167, "val": 50_000},
    "imagenet100": {"train": 126_689, "val": 5_000},
    "cifar10": {"train": 50_000, "test": 10_000},
    "cifar100": {"train": 50_000, "test": 10_000},
    "stl10": {"train": 5_000, "test": 8_000, "unlabeled": 100_000},
    "fashion_mnist": {"train": 60_000, "test": 10_000},
    "mnist": {"train": 60_000, "test": 10_000},
}
NUM_CLASSES = {"imagenet": 1000, "imagenet100": 100, "cifar10": 10, "cifar100": 100, "stl10": 10,
               "fashion_mnist": 10, "mnist": 10}
DATASETS = tuple(KNOWN_COUNTS)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm"}
WNID = re.compile(r"^n\d{8}$")
FLAT_VAL_IMAGE = re.compile(r"^ILSVRC2012_val_\d{8}\.JPEG$")
CMC_RESOURCE = "imagenet100_cmc.txt"

CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                "labels", ("batches.meta", "label_names")),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]},
                 "fine_labels", ("meta", "fine_label_names")),
}
STL_FOLDER = "stl10_binary"
STL_IMAGE_BYTES = 3 * 96 * 96


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn" or "fail"
    detail: str
    fix: str = ""


def imagenet100_classes(class_list=None):
    """The 100 CMC ImageNet-100 wnids, from `class_list` or the copy shipped in the package."""
    if class_list is not None:
        text = Path(class_list).read_text()
    else:
        resource = importlib.resources.files("mlx_hjepa") / "resources" / CMC_RESOURCE
        if not resource.is_file():
            raise FileNotFoundError(
                f"mlx_hjepa/resources/{CMC_RESOURCE} is missing from this install; reinstall mlx-hjepa "
                "or pass --class-list with the 100 ImageNet-100 wnids."
            )
        text = resource.read_text()
    return sorted({line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("#")})


# --- folder datasets (ImageNet, ImageNet-100) -----------------------------------------------------


class _Reservoir:
    """A uniform random sample of `size` items from a stream of unknown length."""

    def __init__(self, size, rng):
        self.size, self.rng, self.items, self.seen = size, rng, [], 0

    def add(self, item):
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        elif (j := self.rng.randrange(self.seen)) < self.size:
            self.items[j] = item


def _scan_class_folders(split_dir, wanted, reservoir):
    """Image count per wanted class folder, plus the other folders, loose files and non-image
    files of `split_dir`; every image path is offered to `reservoir` for the decode sample."""
    entries = list(os.scandir(split_dir))
    present = {e.name for e in entries if e.is_dir()}
    loose = [e.name for e in entries if e.is_file()]
    counts, ignored = {}, 0
    for name in sorted(present & set(wanted)):
        n = 0
        for entry in os.scandir(split_dir / name):
            if not entry.is_file():
                continue
            if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
                ignored += 1
                continue
            n += 1
            reservoir.add(entry.path)
        counts[name] = n
    return counts, sorted(present - set(wanted)), loose, ignored


def _verify_folders(name, root, counts, class_list, reservoir):
    checks, classes_by_split = [], {}
    if name == "imagenet100":
        wanted = imagenet100_classes(class_list)
        checks.append(Check("class list", "ok", f"{len(wanted)} ImageNet-100 (CMC) classes"))
    for split, expected in counts.items():
        split_dir = root / split
        if not split_dir.is_dir():
            how = ("extract ILSVRC2012_img_train.tar and its per-class tarballs into it"
                   if split == "train" else
                   "extract ILSVRC2012_img_val.tar into it and run `python -m mlx_hjepa.data prepare-imagenet-val`")
            checks.append(Check(f"{split}/", "fail", f"{split_dir} does not exist",
                                f"Create {split_dir}: {how} (see scripts/download_imagenet100.sh)."))
            continue
        if name == "imagenet":
            wanted = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and WNID.match(e.name))
        per_class, others, loose, ignored = _scan_class_folders(split_dir, wanted, reservoir)
        classes_by_split[split] = set(per_class)
        flat = [f for f in loose if FLAT_VAL_IMAGE.match(f)]
        tarballs = [f for f in loose if WNID.match(f.removesuffix(".tar"))]
        if tarballs:
            checks.append(Check(f"{split}/ layout", "fail", f"{len(tarballs):,} class tarballs ({tarballs[0]}, ...) are not extracted",
                                f"Extract each into its folder: cd {split_dir} && for f in n*.tar; do mkdir -p \"${{f%.tar}}\" && tar -xf \"$f\" -C \"${{f%.tar}}\" && rm \"$f\"; done"))
        if flat:
            checks.append(Check(f"{split}/ layout", "fail", f"{len(flat):,} images lie directly in {split_dir}, not in class folders",
                                f"Run `python -m mlx_hjepa.data prepare-imagenet-val --root {root} --devkit ILSVRC2012_devkit_t12.tar.gz`."))
        extra = f"; {len(others)} other folders ignored" if others else ""
        missing = sorted(set(wanted) - set(per_class))
        n_classes = len(per_class)
        if name == "imagenet100" and missing:
            checks.append(Check(f"{split}/ classes", "fail", f"{n_classes}/{len(wanted)} ImageNet-100 class folders found{extra}",
                                f"Add the missing class folders ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}) from a full ImageNet {split}/ tree (scripts/download_imagenet100.sh links them)."))
        elif name == "imagenet" and n_classes != NUM_CLASSES[name]:
            checks.append(Check(f"{split}/ classes", "fail", f"{n_classes} wnid folders found, expected 1000{extra}",
                                f"Re-extract the full ILSVRC2012 {split} set into {split_dir}."))
        else:
            checks.append(Check(f"{split}/ classes", "ok", f"{n_classes} class folders{extra}"))
        empty = [c for c, n in per_class.items() if n == 0]
        if empty:
            checks.append(Check(f"{split}/ empty classes", "fail", f"{len(empty)} class folders hold no images: {', '.join(empty[:3])}",
                                f"Re-extract those classes into {split_dir} (for train, the class tarball nXXXXXXXX.tar)."))
        total = sum(per_class.values())
        note = f"; {ignored} non-image files ignored" if ignored else ""
        if expected is not None and total != expected:
            fewest = sorted(per_class, key=per_class.get)[:3]
            hint = ", ".join(f"{c} ({per_class[c]})" for c in fewest)
            checks.append(Check(f"{split} images", "fail", f"{total:,} images, expected {expected:,}{note}",
                                f"Re-extract the incomplete classes into {split_dir} (fewest images: {hint})." if fewest else
                                f"Extract the {split} images into {split_dir}."))
        else:
            checks.append(Check(f"{split} images", "ok", f"{total:,} images" + (" (as expected)" if expected else "") + note))
    if len(classes_by_split) == 2:
        train, val = classes_by_split.values()
        if train != val:
            diff = sorted(train ^ val)
            checks.append(Check("train/val classes", "fail", f"{len(diff)} classes are in only one split: {', '.join(diff[:3])}",
                                "Give train/ and val/ the same class folders."))
    checks.append(_decode_sample(reservoir.items))
    return checks


def _decode_sample(paths):
    from PIL import Image

    bad = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
            bad.append(f"{path} ({type(e).__name__})")
    if not paths:
        return Check("decode sample", "warn", "no images to decode")
    if bad:
        return Check("decode sample", "fail", f"{len(bad)} of {len(paths)} sampled images do not decode: {bad[0]}",
                     "Re-extract the folders of the broken files or delete them (the loaders skip and count unreadable images).")
    return Check("decode sample", "ok", f"{len(paths)} random images decode")


# --- array datasets (CIFAR, STL-10) ---------------------------------------------------------------


# The globals an ndarray pickle names: _reconstruct (protocol <= 4) or _frombuffer (protocol 5),
# from numpy.core or numpy._core depending on the numpy that wrote it.
_ARRAY_GLOBALS = {"_reconstruct": np.empty(0).__reduce__()[0], "_frombuffer": np.empty(0).__reduce_ex__(5)[0],
                  "ndarray": np.ndarray, "dtype": np.dtype}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: no other code named in the file can run."""

    def find_class(self, module, name):
        if module.split(".")[0] == "numpy" and name in _ARRAY_GLOBALS:
            return _ARRAY_GLOBALS[name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_cifar_pickle(path):
    with open(path, "rb") as f:
        entry = _ArraysOnlyUnpickler(f, encoding="latin1").load()
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _dataset_folder(root, folder):
    return root if root.name == folder else root / folder


def _verify_cifar(name, root, counts):
    folder_name, split_files, label_key, (meta_file, names_key) = CIFAR_FILES[name]
    folder = _dataset_folder(root, folder_name)
    get = f"`python -m mlx_hjepa.data download {name} --root {root}`"
    if not folder.is_dir():
        return [Check("layout", "fail", f"{folder} does not exist", f"Run {get}.")]
    checks = []
    try:
        classes = len(load_cifar_pickle(folder / meta_file)[names_key])
        status = "ok" if classes == NUM_CLASSES[name] else "fail"
        checks.append(Check("classes", status, f"{classes} class names in {meta_file}",
                            "" if status == "ok" else f"Delete {folder} and run {get}."))
    except Exception as e:
        checks.append(Check("classes", "fail", f"{meta_file} unreadable ({type(e).__name__}: {e})", f"Delete {folder} and run {get}."))
    for split, files in split_files.items():
        total, problems = 0, []
        for file in files:
            try:
                entry = load_cifar_pickle(folder / file)
                data, labels = np.asarray(entry["data"]), np.asarray(entry[label_key])
                if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
                    problems.append(f"{file}: data {data.dtype} {data.shape}, {len(labels)} labels")
                elif len(labels) and not 0 <= labels.min() <= labels.max() < NUM_CLASSES[name]:
                    problems.append(f"{file}: labels outside 0..{NUM_CLASSES[name] - 1}")
                total += len(data)
            except Exception as e:
                problems.append(f"{file}: {type(e).__name__}: {e}")
        expected = counts.get(split)
        if problems:
            checks.append(Check(f"{split} images", "fail", "; ".join(problems), f"Delete {folder} and run {get}."))
        elif expected is not None and total != expected:
            checks.append(Check(f"{split} images", "fail", f"{total:,} images, expected {expected:,}", f"Delete {folder} and run {get}."))
        else:
            checks.append(Check(f"{split} images", "ok", f"{total:,} 32x32 images, labels in range"))
    return checks


def _verify_stl10(root, counts):
    folder = _dataset_folder(root, STL_FOLDER)
    get = f"`python -m mlx_hjepa.data download stl10 --root {root}`"
    if not folder.is_dir():
        return [Check("layout", "fail", f"{folder} does not exist", f"Run {get}.")]
    checks = []
    names = folder / "class_names.txt"
    n_names = len(names.read_text().split()) if names.is_file() else 0
    checks.append(Check("classes", "ok" if n_names == 10 else "fail", f"{n_names} class names in class_names.txt",
                        "" if n_names == 10 else f"Delete {folder} and run {get}."))
    for split, expected in counts.items():
        images, labels = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
        if not images.is_file() or (split != "unlabeled" and not labels.is_file()):
            checks.append(Check(f"{split} images", "fail", f"{images.name} or {labels.name} missing", f"Delete {folder} and run {get}."))
            continue
        size = images.stat().st_size
        n = size // STL_IMAGE_BYTES
        problem = ""
        if size % STL_IMAGE_BYTES:
            problem = f"{images.name} is {size:,} bytes, not a whole number of 96x96x3 images"
        elif split != "unlabeled":
            y = np.fromfile(labels, dtype=np.uint8)
            if len(y) != n:
                problem = f"{n:,} images but {len(y):,} labels"
            elif n and not 1 <= y.min() <= y.max() <= 10:
                problem = "labels outside 1..10"
        if not problem and expected is not None and n != expected:
            problem = f"{n:,} images, expected {expected:,}"
        checks.append(Check(f"{split} images", "fail" if problem else "ok", problem or f"{n:,} 96x96 images",
                            f"Delete {folder} and run {get}." if problem else ""))
    return checks


def _verify_idx(name, root, counts):
    from .idx import load_idx

    checks = []
    for split, expected in counts.items():
        try:
            images, labels, _ = load_idx(name, root, split)  # the loader's own checks: files, headers, sizes, labels
        except (OSError, ValueError) as e:
            what, _, fix = str(e).partition("; ")
            checks.append(Check(f"{split} images", "fail", what, fix[:1].upper() + fix[1:]))
            continue
        problem = f"{len(images):,} images, expected {expected:,}" if expected is not None and len(images) != expected else ""
        checks.append(Check(f"{split} images", "fail" if problem else "ok",
                            problem or f"{len(images):,} {images.shape[1]}x{images.shape[2]} images, labels in 0..{labels.max()}",
                            f"Delete the {split} files and get them again." if problem else ""))
    return checks


# --- entry point ----------------------------------------------------------------------------------


def verify_dataset(name, root, counts=None, class_list=None, sample=200, seed=0, min_free_gb=10.0):
    """Run every check for dataset `name` under `root`; returns a list of Check.
    `counts` ({split: n}) replaces the official image counts, e.g. for a custom subset."""
    if name not in KNOWN_COUNTS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    root = Path(root).expanduser()
    expected = dict(KNOWN_COUNTS[name], **(counts or {}))
    if not root.is_dir():
        return [Check("root", "fail", f"{root} does not exist", f"Pass --root the folder that holds the {name} data.")]
    if name in ("imagenet", "imagenet100"):
        checks = _verify_folders(name, root, expected, class_list, _Reservoir(sample, random.Random(seed)))
    elif name in CIFAR_FILES:
        checks = _verify_cifar(name, root, expected)
    elif name in ("fashion_mnist", "mnist"):
        checks = _verify_idx(name, root, expected)
    else:
        checks = _verify_stl10(root, expected)
    free = shutil.disk_usage(root).free / 2**30
    low = free < min_free_gb
    checks.append(Check("free disk", "warn" if low else "ok", f"{free:,.1f} GiB free on the disk of {root}",
                        f"Free at least {min_free_gb:g} GiB for checkpoints and logs." if low else ""))
    return checks


def print_report(name, root, checks, console=None):
    """Print the checks as a table; return True when none failed."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"verify {name} ({root})")
    for column in ("check", "status", "detail"):
        table.add_column(column)
    style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    for c in checks:
        table.add_row(c.name, f"[{style[c.status]}]{c.status}[/]", c.detail)
    console.print(table)
    failed = [c for c in checks if c.status == "fail"]
    for c in failed:
        console.print(f"[bold red]fix[/] {c.name}: {c.fix}", highlight=False)
    console.print(f"{name}: " + (f"{len(failed)} problem(s) found." if failed else "all checks passed."), highlight=False)
    return not failed

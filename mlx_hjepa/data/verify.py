"""Check a dataset on disk before training on it: layout, classes, image counts, free space, decodes.

It walks the folders and files itself rather than building the dataset classes, so it
can say what is wrong with a tree that the loaders would refuse; the rules it checks
against (image extensions, class lists, CIFAR files and their restricted unpickler,
STL-10 sizes) are the loaders' own, so it counts what training reads. Every failed
check carries one sentence saying how to fix it.
"""

import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import stl10
from .cifar import LAYOUT as CIFAR_LAYOUT
from .cifar import load_pickle
from ..rules import FOLDER_DATASETS
from .folder import IMAGENET100_CLASSES, is_image_name, read_class_list
from .idx import load_idx

# None: no official count; the folder is checked for layout, classes and decodes only.
KNOWN_COUNTS = {
    "imagenet": {"train": 1_281_167, "val": 50_000},
    "imagenet100": {"train": 126_689, "val": 5_000},
    "imagefolder": {"train": None, "val": None},
    "cifar10": {"train": 50_000, "test": 10_000},
    "cifar100": {"train": 50_000, "test": 10_000},
    "stl10": {"train": 5_000, "test": 8_000, "unlabeled": 100_000},
    "fashion_mnist": {"train": 60_000, "test": 10_000},
    "mnist": {"train": 60_000, "test": 10_000},
}
NUM_CLASSES = {"imagenet": 1000, "imagenet100": 100, "cifar10": 10, "cifar100": 100, "stl10": len(stl10.CLASSES),
               "fashion_mnist": 10, "mnist": 10}
DATASETS = tuple(KNOWN_COUNTS)

WNID = re.compile(r"^n\d{8}$")
FLAT_VAL_IMAGE = re.compile(r"^ILSVRC2012_val_\d{8}\.JPEG$")


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn" or "fail"
    detail: str
    fix: str = ""


# --- folder datasets (ImageNet, ImageNet-100, imagefolder) ---------------------------------------


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
            if not is_image_name(entry.name):
                ignored += 1
                continue
            n += 1
            reservoir.add(entry.path)
        counts[name] = n
    return counts, sorted(present - set(wanted)), loose, ignored


def _missing_split(name, split, split_dir, expected):
    if name == "imagefolder":
        if split != "train" and expected is None:  # only training needs it; evaluation reads val/
            return Check(f"{split}/", "warn", f"{split_dir} does not exist",
                         f"Add {split_dir}/<class>/<image> to evaluate on it.")
        return Check(f"{split}/", "fail", f"{split_dir} does not exist",
                     f"Create {split_dir} with one folder of images per class.")
    how = ("extract ILSVRC2012_img_train.tar and its per-class tarballs into it"
           if split == "train" else
           "extract ILSVRC2012_img_val.tar into it and run `python -m mlx_hjepa.data prepare-imagenet-val`")
    return Check(f"{split}/", "fail", f"{split_dir} does not exist",
                 f"Create {split_dir}: {how} (see scripts/download_imagenet100.sh).")


def _verify_folders(name, root, counts, class_list, reservoir):
    checks, classes_by_split, wanted = [], {}, None
    if class_list is not None:
        wanted = sorted(set(read_class_list(class_list)))
        checks.append(Check("class list", "ok", f"{len(wanted)} classes from {class_list}"))
    elif name == "imagenet100":
        wanted = sorted(IMAGENET100_CLASSES)
        checks.append(Check("class list", "ok", f"{len(wanted)} ImageNet-100 (CMC) classes"))
    for split, expected in counts.items():
        split_dir = root / split
        if not split_dir.is_dir():
            checks.append(_missing_split(name, split, split_dir, expected))
            continue
        if name == "imagenet" and class_list is None:
            wanted = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and WNID.match(e.name))
        split_wanted = wanted
        if split_wanted is None:  # imagefolder without a list: every sub-folder is a class, as in the loader
            split_wanted = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
        per_class, others, loose, ignored = _scan_class_folders(split_dir, split_wanted, reservoir)
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
        missing = sorted(set(split_wanted) - set(per_class))
        n_classes = len(per_class)
        if name in ("imagenet", "imagenet100") and wanted is not None and missing:
            listed = "listed" if class_list is not None else "ImageNet-100"
            checks.append(Check(f"{split}/ classes", "fail", f"{n_classes}/{len(wanted)} {listed} class folders found{extra}",
                                f"Add the missing class folders ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}) from a full ImageNet {split}/ tree (scripts/download_imagenet100.sh links them)."))
        elif name == "imagefolder" and (missing or not n_classes):
            checks.append(Check(f"{split}/ classes", "fail", f"{n_classes}/{len(split_wanted)} listed class folders found{extra}"
                                if wanted is not None else f"no class folders in {split_dir}{extra}",
                                f"Put the images of each class in their own folder: {split_dir}/<class>/<image>."))
        elif name == "imagenet" and class_list is None and n_classes != NUM_CLASSES[name]:
            checks.append(Check(f"{split}/ classes", "fail", f"{n_classes} wnid folders found, expected 1000{extra}",
                                f"Re-extract the full ILSVRC2012 {split} set into {split_dir}."))
        else:
            checks.append(Check(f"{split}/ classes", "ok", f"{n_classes} class folders{extra}"))
        empty = [c for c, n in per_class.items() if n == 0]
        if empty:
            checks.append(Check(f"{split}/ empty classes", "fail", f"{len(empty)} class folders hold no images: {', '.join(empty[:3])}",
                                f"Re-extract those classes into {split_dir} (for train, the class tarball nXXXXXXXX.tar)."
                                if name != "imagefolder" else f"Add images to those folders or remove them from {split_dir}."))
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
    if "train" in classes_by_split:
        for split, classes in classes_by_split.items():
            if classes != classes_by_split["train"]:
                diff = sorted(classes ^ classes_by_split["train"])
                checks.append(Check(f"train/{split} classes", "fail", f"{len(diff)} classes are in only one split: {', '.join(diff[:3])}",
                                    f"Give train/ and {split}/ the same class folders."))
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


def _dataset_folder(root, folder):
    return root if root.name == folder else root / folder


def _verify_cifar(name, root, counts):
    layout = CIFAR_LAYOUT[name]
    folder, meta_file = _dataset_folder(root, layout.folder), layout.meta
    get = f"`python -m mlx_hjepa.data download {name} --root {root}`"
    if not folder.is_dir():
        return [Check("layout", "fail", f"{folder} does not exist", f"Run {get}.")]
    checks = []
    try:
        classes = len(load_pickle((folder / meta_file).read_bytes())[layout.names_key])
        status = "ok" if classes == NUM_CLASSES[name] else "fail"
        checks.append(Check("classes", status, f"{classes} class names in {meta_file}",
                            "" if status == "ok" else f"Delete {folder} and run {get}."))
    except Exception as e:
        checks.append(Check("classes", "fail", f"{meta_file} unreadable ({type(e).__name__}: {e})", f"Delete {folder} and run {get}."))
    for split, files in layout.splits.items():
        total, problems = 0, []
        for file in files:
            try:
                entry = load_pickle((folder / file).read_bytes())  # the loader's unpickler: arrays, containers only
                data, labels = np.asarray(entry[b"data"]), np.asarray(entry[layout.labels_key])
                if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
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
    folder = _dataset_folder(root, stl10.FOLDER)
    get = f"`python -m mlx_hjepa.data download stl10 --root {root}`"
    if not folder.is_dir():
        return [Check("layout", "fail", f"{folder} does not exist", f"Run {get}.")]
    checks = []
    names = folder / "class_names.txt"
    n_names = len(names.read_text().split()) if names.is_file() else 0
    ok = n_names == NUM_CLASSES["stl10"]
    checks.append(Check("classes", "ok" if ok else "fail", f"{n_names} class names in class_names.txt",
                        "" if ok else f"Delete {folder} and run {get}."))
    for split, expected in counts.items():
        images, labels = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
        if not images.is_file() or (split != "unlabeled" and not labels.is_file()):
            checks.append(Check(f"{split} images", "fail", f"{images.name} or {labels.name} missing", f"Delete {folder} and run {get}."))
            continue
        size = images.stat().st_size
        n = size // stl10.IMAGE_BYTES
        problem = ""
        if size % stl10.IMAGE_BYTES:
            problem = f"{images.name} is {size:,} bytes, not a whole number of 96x96x3 images"
        elif split != "unlabeled":
            y = np.fromfile(labels, dtype=np.uint8)
            if len(y) != n:
                problem = f"{n:,} images but {len(y):,} labels"
            elif n and not 1 <= y.min() <= y.max() <= NUM_CLASSES["stl10"]:
                problem = "labels outside 1..10"
        if not problem and expected is not None and n != expected:
            problem = f"{n:,} images, expected {expected:,}"
        checks.append(Check(f"{split} images", "fail" if problem else "ok", problem or f"{n:,} 96x96 images",
                            f"Delete {folder} and run {get}." if problem else ""))
    return checks


def _verify_idx(name, root, counts):
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
    known = KNOWN_COUNTS[name]
    if class_list is not None and set(read_class_list(class_list)) != set(IMAGENET100_CLASSES):
        known = {split: None for split in known}  # a custom subset has no official counts
    expected = dict(known, **(counts or {}))
    if not root.is_dir():
        return [Check("root", "fail", f"{root} does not exist", f"Pass --root the folder that holds the {name} data.")]
    if name in FOLDER_DATASETS:
        checks = _verify_folders(name, root, expected, class_list, _Reservoir(sample, random.Random(seed)))
    elif name in CIFAR_LAYOUT:
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

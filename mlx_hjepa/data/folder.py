"""Class-per-folder image datasets: ImageNet, ImageNet-100 (CMC subset), any image folder.

Layout: ``ROOT/SPLIT/<class>/<image>``. Classes come from a list (ImageNet-100: the CMC
synsets) or from the sub-folders, labels 0..C-1 in sorted class-name order.

Unreadable files are found lazily, at load time, never by a scan at build time (a
scan of 1.28M ImageNet files costs minutes): every file is read in Python and
checked; a plain 3-channel JPEG with its end marker goes to mlx-data's native
decoder; anything else (greyscale or CMYK JPEG, PNG even when named .JPEG, RGBA,
palette) is decoded by PIL, converted to RGB and handed over as PPM. A file neither
can read (corrupt, truncated) is counted in ``num_skipped`` / ``unreadable`` and
replaced by the next readable sample, so a batch never holds a black image.
Non-image files are ignored; empty class folders are listed in ``empty_classes``
and warned about.
"""

import os
import warnings
from importlib import resources

import numpy as np

from .sources import ImageSource, UnreadableImageError, encode_ppm
from .transforms import default_transform

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


def is_image_name(name):
    """True for the file names the loaders read; anything else in a class folder is ignored."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


IMAGENET100_CLASSES = tuple(
    line.strip()
    for line in resources.files("mlx_hjepa").joinpath("resources/imagenet100_cmc.txt").read_text().splitlines()
    if line.strip()
)

LAYOUT_HELP = (
    "expected layout: {root}/{split}/<class>/<image>.JPEG, e.g. {root}/{split}/n01440764/<image>.JPEG "
    "(for ImageNet val, `python -m mlx_hjepa.data prepare-imagenet-val` sorts the flat val images into class folders)"
)

# Start-of-frame markers that carry the component count (not DHT C4, JPG C8, DAC CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_components(data):
    """Colour components of a complete JPEG (1 grey, 3 YCbCr, 4 CMYK), or None if not one.

    "Complete" means: SOI at the start, a start-of-frame header, and an EOI marker in
    the last 64 bytes (a truncated file has none; FF D9 never occurs in entropy data).
    """
    if data[:2] != b"\xff\xd8" or data.rfind(b"\xff\xd9", max(0, len(data) - 64)) < 0:
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in _SOF_MARKERS:
            return data[i + 9]
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _decode_with_pil(data):
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image.convert("RGBA"))
            return np.asarray(image.convert("RGB"))
    except Exception as error:  # PIL raises many types for broken files
        raise UnreadableImageError(str(error)) from error


def read_image_file(path, safe=False):
    """Read ``path`` and return bytes the native decoder handles (JPEG as is, else PPM).

    With ``safe=True`` every file is decoded by PIL (used after a native decode error).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise UnreadableImageError(str(error)) from error
    if not safe and jpeg_components(data) == 3:
        return np.frombuffer(bytearray(data), np.uint8)
    return encode_ppm(_decode_with_pil(data))


def _is_file(entry):
    """False for anything that is not a readable regular file, a symlink loop included."""
    try:
        return entry.is_file()
    except OSError as err:
        warnings.warn(f"skipping {entry.path!r}: {err.strerror}", stacklevel=3)
        return False


class ImageFolderDataset(ImageSource):
    """Any class-per-folder tree: ``data_path/split/<class>/<image>``.

    Args:
        data_path: root folder holding the split folders.
        split: split folder name ("train", "val", ...); None uses data_path itself.
        class_list: class folder names to keep, or a text file with one name a line;
            None keeps every sub-folder. Labels follow the sorted class names.
        transform: JEPATransform / JEPAEvalTransform used by the loader.
        name: dataset name used in logs and stats.
        transform_options: when no transform is given, ``image_size``, ``crop_scale``,
            ``color_jitter``, ``horizontal_flip`` build the split's default transform.

    Attributes: files (list of paths), labels (np.int32), classes, empty_classes,
    unreadable (set of paths found unreadable so far), num_skipped.
    """

    def __init__(self, data_path, split="train", class_list=None, transform=None, name="imagefolder",
                 **transform_options):
        if transform is None and transform_options:
            transform = default_transform(split, **transform_options)
        root = os.fspath(data_path)
        folder = root if split is None else os.path.join(root, split)
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"{name}: no folder {folder!r}; " + LAYOUT_HELP.format(root=root, split=split or "<split>")
            )
        if class_list is None:
            classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
        else:
            classes = sorted(set(read_class_list(class_list)))
        if not classes:
            raise FileNotFoundError(f"{name}: no class folders in {folder!r}; " + LAYOUT_HELP.format(
                root=root, split=split or "<split>"))

        files, labels, self.empty_classes = [], [], []
        for label, cls in enumerate(classes):
            class_dir = os.path.join(folder, cls)
            names = sorted(entry.name for entry in os.scandir(class_dir)
                           if is_image_name(entry.name) and _is_file(entry)) if os.path.isdir(class_dir) else []
            if not names:
                self.empty_classes.append(cls)
            files.extend(os.path.join(class_dir, n) for n in names)
            labels.extend([label] * len(names))
        if not files:
            raise FileNotFoundError(f"{name}: no images under {folder!r}; " + LAYOUT_HELP.format(
                root=root, split=split or "<split>"))
        if self.empty_classes:
            shown = ", ".join(self.empty_classes[:10]) + (" ..." if len(self.empty_classes) > 10 else "")
            warnings.warn(f"{name}: {len(self.empty_classes)} of {len(classes)} classes have no images in "
                          f"{folder}: {shown}", stacklevel=2)

        self.name, self.root, self.split, self.folder = name, root, split, folder
        self.classes = classes
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int32)
        self.transform = transform
        self.unreadable = set()

    @property
    def num_skipped(self):
        return len(self.unreadable)

    def read(self, index, safe=False):
        return read_image_file(self.files[index], safe)

    def load(self, index, safe=False):
        for attempt in range(len(self)):
            candidate = (index + attempt) % len(self)
            if self.files[candidate] in self.unreadable:
                continue
            try:
                return self.read(candidate, safe), candidate
            except UnreadableImageError:
                if self.files[candidate] not in self.unreadable:
                    self.unreadable.add(self.files[candidate])
                    warnings.warn(f"{self.name}: skipping unreadable image {self.files[candidate]}", stacklevel=2)
        raise RuntimeError(f"{self.name}: none of the {len(self)} images under {self.folder} can be decoded.")


def read_class_list(class_list):
    """Class folder names from a list, or from a text file with one name a line (``#`` lines skipped)."""
    if isinstance(class_list, (str, os.PathLike)):
        if not os.path.isfile(class_list):
            raise FileNotFoundError(f"class_list file {os.fspath(class_list)!r} does not exist; give a list of "
                                    "class folder names or a text file with one name a line.")
        with open(class_list) as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return [str(c) for c in class_list]


class ImageNetDataset(ImageFolderDataset):
    """ImageNet-1k in class folders: ``data_path/{train,val}/<wnid>/*.JPEG`` (1000 classes), or the
    synsets of ``class_list`` (a list, or a file with one a line)."""

    def __init__(self, data_path="./data/imagenet", split="train", transform=None, class_list=None,
                 name="imagenet", **transform_options):
        super().__init__(data_path, split, class_list=class_list, transform=transform, name=name, **transform_options)


class ImageNet100Dataset(ImageNetDataset):
    """ImageNet-100: the 100 CMC synsets (``CLASSES``), labels 0..99 in sorted synset order.

    Reads the ordinary ImageNet folders (``data_path/{train,val}/<wnid>/``); ``classes``
    always lists exactly the listed synsets, missing ones are reported in ``empty_classes``.
    A custom subset: ``class_list=[...]`` (or a file), or a subclass that sets ``CLASSES``.
    ``image_size=``, ``crop_scale=``, ``color_jitter=``, ``horizontal_flip=`` build the
    split's default transform when no ``transform`` is given.
    """

    CLASSES = IMAGENET100_CLASSES

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        foreign = [n for n in ("CUSTOM_CLASSES", "_filter_classes") if n in vars(cls)]
        if foreign:
            raise TypeError(f"{cls.__name__} defines {' and '.join(foreign)}, which ImageNet100Dataset never reads; "
                            "set CLASSES = [...synsets...] on the subclass, or pass class_list=[...] instead.")

    def __init__(self, data_path="./data/imagenet", split="train", transform=None, class_list=None,
                 name="imagenet100", **transform_options):
        super().__init__(data_path, split, transform=transform, class_list=class_list or self.CLASSES,
                         name=name, **transform_options)

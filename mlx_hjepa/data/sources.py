"""What every dataset offers the loader, and the in-memory array dataset.

A dataset (``ImageSource``) is a list of labelled images. The loader asks it for the
*encoded* bytes of sample ``i`` (JPEG, PNG or PPM, as a writeable uint8 array) and
decodes them with mlx-data's native ``load_image``, so folders of JPEGs and in-memory
uint8 arrays (CIFAR, STL-10, synthetic, encoded as PPM: a header and a memcpy) flow
through one pipeline.

Attributes every dataset has:
    name (str), classes (list of class names), num_classes (int),
    labels (np.int32, one per sample; -1 where unlabelled), transform (or None),
    len(ds), ds[i] -> {"image": uint8 HWC, "label": int} (untransformed, for inspection).
"""

import numpy as np


class UnreadableImageError(Exception):
    """Raised by ``ImageSource.read`` for a file that cannot be decoded."""


def encode_ppm(image):
    """Encode a uint8 HWC RGB (or HW grey) array as binary PPM/PGM bytes in a writeable uint8 array."""
    height, width = image.shape[:2]
    magic = b"P6" if image.ndim == 3 else b"P5"
    if image.ndim == 3 and image.shape[2] != 3:
        raise ValueError(f"expected 3 channels, got shape {image.shape}")
    header = np.frombuffer(b"%s\n%d %d\n255\n" % (magic, width, height), np.uint8)
    return np.concatenate([header, np.ascontiguousarray(image, dtype=np.uint8).reshape(-1)])


def decode_rgb(encoded):
    """Decode encoded image bytes to a uint8 HWC RGB array with PIL (inspection, safe mode)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(encoded.tobytes())) as image:
        return np.asarray(image.convert("RGB"))


class ImageSource:
    """Base class: subclasses set name, classes, labels and implement ``read``."""

    name = "dataset"
    classes: list = []
    labels: np.ndarray = np.zeros(0, np.int32)
    transform = None
    image_shape = None  # (H, W, 3) when every image has the same size, else None

    def __len__(self):
        return len(self.labels)

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def num_skipped(self):
        """Samples found unreadable so far (replaced by a readable neighbour when loading)."""
        return 0

    @property
    def samples_per_epoch(self):
        return len(self)

    def epoch_indices(self, epoch, seed=0, shuffle=True):
        """This epoch's sample order: a fresh permutation keyed by (seed, epoch), or 0..n-1."""
        if not shuffle:
            return np.arange(len(self), dtype=np.int64)
        return np.random.default_rng([seed, epoch, 0x5EED]).permutation(len(self)).astype(np.int64)

    def read(self, index, safe=False):
        """Encoded bytes of sample ``index`` (writeable uint8 array); raises UnreadableImageError."""
        raise NotImplementedError

    def load(self, index, safe=False):
        """(encoded bytes, index actually read): an unreadable sample is replaced by the next readable one."""
        return self.read(index, safe), index

    def sample_info(self, index):
        """(label, dataset id) of sample ``index``."""
        return int(self.labels[index]), 0

    def __getitem__(self, index):
        encoded, actual = self.load(int(index), safe=True)
        return {"image": decode_rgb(encoded), "label": int(self.labels[actual])}

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, size={len(self)}, classes={self.num_classes})"


class ArrayDataset(ImageSource):
    """Images held in memory as one uint8 array (N, H, W, 3) with int labels (N,)."""

    def __init__(self, images, labels, classes, name="array", transform=None):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        if len(labels) != len(images):
            raise ValueError(f"got {len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int32)
        self.classes = list(classes)
        self.name = name
        self.transform = transform
        self.image_shape = tuple(images.shape[1:])

    def read(self, index, safe=False):
        return encode_ppm(self.images[index])

    def __getitem__(self, index):
        return {"image": np.array(self.images[index]), "label": int(self.labels[index])}

"""MNIST-style IDX sources: tiny files written here, and the real Fashion-MNIST files
that scripts/install_test_data.sh installs (Debian's dataset-fashion-mnist)."""

import gzip
import hashlib
import os
import platform
from pathlib import Path

import numpy as np
import pytest

from mlx_hjepa.data import build_dataset
from mlx_hjepa.data.download import FILE_SETS, DownloadError, FileSet, download_dataset
from mlx_hjepa.data.idx import IDXDataset, read_idx
from mlx_hjepa.data.verify import verify_dataset

FASHION_MNIST = Path(os.environ.get("HJEPA_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


def real_fashion_mnist():
    """The installed Fashion-MNIST folder; a failure (not a skip) on Linux, where CI installs it."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        message = (f"Fashion-MNIST is not in {FASHION_MNIST}: run `bash scripts/install_test_data.sh` "
                   "(apt-get install dataset-fashion-mnist) or set HJEPA_FASHION_MNIST to a folder holding the files")
        if platform.system() == "Linux":
            pytest.fail(message)
        pytest.skip(message)
    return FASHION_MNIST


def idx_bytes(array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.tobytes()


def write_idx(folder, name, array, gz):
    folder.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    path = folder / (name + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def tiny_set(folder, gz=True, rows=5):
    """Train and test splits of `rows` 28x28 images whose pixel (0, 0) is the image's index."""
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, (rows, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(rows)
        labels = np.arange(rows, dtype=np.uint8) % 10
        write_idx(folder, f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder, f"{prefix}-labels-idx1-ubyte", labels, gz)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_reads_gzipped_and_plain_files_as_rgb(tmp_path, gz):
    arrays = tiny_set(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        dataset = build_dataset("fashion_mnist", tmp_path, split, image_size=28)
        images, labels = arrays[prefix]
        assert dataset.images.shape == (5, 28, 28, 3) and dataset.images.dtype == np.uint8
        for channel in range(3):  # grey repeated in every channel, pixel for pixel
            np.testing.assert_array_equal(dataset.images[..., channel], images)
        np.testing.assert_array_equal(dataset.labels, labels)
        assert dataset.classes[0] == "T-shirt/top" and dataset.num_classes == 10
        assert dataset[3]["label"] == 3 and dataset[3]["image"][0, 0, 0] == 3


def test_reads_the_download_subfolder_and_mnist_names(tmp_path):
    tiny_set(tmp_path / "mnist")
    dataset = build_dataset("mnist", tmp_path, "val", image_size=28)  # val reads the test files
    assert len(dataset) == 5 and dataset.classes == [str(d) for d in range(10)]


def test_missing_file_names_it_and_how_to_get_it(tmp_path):
    tiny_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as error:
        IDXDataset(tmp_path, "test", name="fashion_mnist")
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte" in message and str(tmp_path) in message
    assert "python -m mlx_hjepa.data download fashion_mnist" in message and "dataset-fashion-mnist" in message
    assert message.count(".") >= 1 and "\n" not in message
    IDXDataset(tmp_path, "train", name="fashion_mnist")  # the other split still loads


@pytest.mark.parametrize("damage", ["truncated", "bad_header", "not_gzip", "count_mismatch", "label_range"])
def test_corrupt_files_are_one_sentence_naming_the_file(tmp_path, damage):
    tiny_set(tmp_path, gz=damage != "not_gzip")
    images, labels = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"
    if damage == "truncated":
        target = images.with_suffix(".gz")
        target.write_bytes(gzip.compress(idx_bytes(np.zeros((5, 28, 28)))[:-10]))
    elif damage == "bad_header":
        target = images.with_suffix(".gz")
        target.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + bytes(100)))
    elif damage == "not_gzip":
        target = images
        images.unlink()
        target = images.with_name(images.name + ".gz")
        target.write_bytes(b"this is not gzip data at all")
    elif damage == "count_mismatch":
        target = labels.with_suffix(".gz")
        target.write_bytes(gzip.compress(idx_bytes(np.zeros(4))))
    else:
        target = labels.with_suffix(".gz")
        target.write_bytes(gzip.compress(idx_bytes(np.full(5, 10))))
    with pytest.raises(ValueError) as error:
        IDXDataset(tmp_path, "train", name="fashion_mnist")
    message = str(error.value)
    assert target.name in message and "\n" not in message and "get" in message


def test_verify_reports_missing_and_good_files(tmp_path):
    tiny_set(tmp_path)
    checks = {c.name: c for c in verify_dataset("fashion_mnist", tmp_path, counts={"train": 5})}
    assert checks["train images"].status == "ok"
    assert checks["test images"].status == "fail" and "5 images, expected 10,000" in checks["test images"].detail
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    checks = {c.name: c for c in verify_dataset("fashion_mnist", tmp_path, counts={"train": 5})}
    assert checks["train images"].status == "fail" and "download fashion_mnist" in checks["train images"].fix


def test_download_fetches_the_four_files_and_checks_each(tmp_path):
    source = tmp_path / "mirror"
    tiny_set(source)
    good = {name: hashlib.md5((source / name).read_bytes()).hexdigest() for name in FILE_SETS["mnist"].md5s}
    official = FILE_SETS["mnist"]
    try:
        FILE_SETS["mnist"] = FileSet(official.base_url, official.folder, good)
        folder = download_dataset("mnist", tmp_path / "data", url=source.as_uri())
        assert sorted(p.name for p in folder.iterdir()) == sorted(good)
        assert len(IDXDataset(tmp_path / "data", "train", name="mnist")) == 5
        (source / "t10k-images-idx3-ubyte.gz").write_bytes(b"tampered")
        (folder / "t10k-images-idx3-ubyte.gz").unlink()
        with pytest.raises(DownloadError, match="checksum"):
            download_dataset("mnist", tmp_path / "data", url=source.as_uri())
    finally:
        FILE_SETS["mnist"] = official


def test_real_fashion_mnist_files():
    root = real_fashion_mnist()
    train, test = IDXDataset(root, "train"), IDXDataset(root, "test")
    assert train.images.shape == (60_000, 28, 28, 3) and test.images.shape == (10_000, 28, 28, 3)
    assert np.bincount(train.labels).tolist() == [6000] * 10 and np.bincount(test.labels).tolist() == [1000] * 10
    assert read_idx(str(root / "t10k-labels-idx1-ubyte.gz")).shape == (10_000,)
    assert 60 < train.images.mean() < 90  # dark background, bright garments (mean grey about 73)

"""Dataset sources: ImageNet-style folders, CIFAR, STL-10, synthetic data, and their errors."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from mlx_hjepa.data import (IMAGENET100_CLASSES, ImageFolderDataset, ImageNet100Dataset, ImageNetDataset,
                            JEPAEvalTransform, build_dataloader, build_dataset)
from mlx_hjepa.data.cifar import load_pickle
from mlx_hjepa.data.synthetic import make_synthetic

CMC = sorted(IMAGENET100_CLASSES)


def _image(rng, height=24, width=32):
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _jpeg_without_scan():
    """A JPEG with start, frame header and end markers but no image data: passes the cheap check, fails decoding."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG")
    data = buffer.getvalue()
    start = data.index(b"\xff\xc0")
    return b"\xff\xd8" + data[start:start + 2 + int.from_bytes(data[start + 2:start + 4], "big")] + b"\xff\xd9"


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    """train/: two CMC synsets and one non-CMC synset; odd files in the first CMC synset."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    odd = {}
    for wnid in (CMC[0], CMC[1], "n00000001"):
        folder = root / "train" / wnid
        folder.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(_image(rng)).save(folder / f"{wnid}_{i}.JPEG", quality=95)
    first = root / "train" / CMC[0]
    odd["cmyk"] = _image(rng)
    Image.fromarray(odd["cmyk"]).convert("CMYK").save(first / "cmyk.JPEG")
    odd["grey"] = _image(rng)[:, :, 0]
    Image.fromarray(odd["grey"]).save(first / "grey.JPEG")
    odd["png"] = _image(rng)
    Image.fromarray(odd["png"]).save(first / "png_named.JPEG", format="PNG")
    odd["rgba"] = np.concatenate([_image(rng), np.full((24, 32, 1), 255, np.uint8)], axis=2)
    Image.fromarray(odd["rgba"]).save(first / "rgba.png")
    good = (first / f"{CMC[0]}_0.JPEG").read_bytes()
    (first / "truncated.JPEG").write_bytes(good[: len(good) // 2])
    (first / "notes.txt").write_text("not an image")
    (root / "train" / CMC[2]).mkdir()  # an empty class folder
    (root / "val" / CMC[0]).mkdir(parents=True)
    Image.fromarray(_image(rng)).save(root / "val" / CMC[0] / "v.JPEG")
    return root, odd


def test_imagenet100_classes_labels_and_conversions(imagenet_root):
    root, odd = imagenet_root
    with pytest.warns(UserWarning, match="no images"):
        ds = ImageNet100Dataset(root, "train", transform=JEPAEvalTransform(32))
    assert len(IMAGENET100_CLASSES) == 100 and ds.classes == CMC and ds.num_classes == 100
    assert len(ds) == 3 + 5 + 3  # non-CMC synset and the .txt file ignored, the broken file counted in
    assert ds.labels.dtype == np.int32
    for path, label in zip(ds.files, ds.labels):
        assert ds.classes[label] == os.path.basename(os.path.dirname(path))
    assert CMC[2] in ds.empty_classes

    by_name = {os.path.basename(f): i for i, f in enumerate(ds.files)}
    assert np.array_equal(ds[by_name["png_named.JPEG"]]["image"], odd["png"])
    assert np.array_equal(ds[by_name["rgba.png"]]["image"], odd["rgba"][:, :, :3])
    assert np.array_equal(ds[by_name["grey.JPEG"]]["image"][:, :, 0], ds[by_name["grey.JPEG"]]["image"][:, :, 2])
    cmyk = ds[by_name["cmyk.JPEG"]]["image"]
    assert cmyk.shape == (24, 32, 3) and np.abs(cmyk.astype(int) - odd["cmyk"]).mean() < 12


def test_unreadable_file_is_replaced_and_counted(imagenet_root):
    root, _ = imagenet_root
    with pytest.warns(UserWarning, match="1 of 4 classes have no images"):
        ds = ImageNetDataset(root, "train", transform=JEPAEvalTransform(32))
    assert ds.num_classes == 4  # every sub-folder, the empty one included
    with pytest.warns(UserWarning, match="unreadable"):
        batches = list(build_dataloader(ds, batch_size=4, num_workers=2, shuffle=False, drop_last=False))
    images = np.concatenate([b["image"] for b in batches])
    indices = np.concatenate([b["index"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    assert len(images) == len(ds) and images.shape[1:] == (32, 32, 3)
    assert ds.num_skipped == 1 and ds.unreadable == {str(root / "train" / CMC[0] / "truncated.JPEG")}
    assert images.reshape(len(images), -1).max(axis=1).min() > 0  # no black stand-in
    assert set(indices) == set(range(len(ds))) - {ds.files.index(next(iter(ds.unreadable)))}
    assert np.array_equal(labels, ds.labels[indices])


def test_native_decode_failure_falls_back_to_pil(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(_image(rng)).save(folder / f"{i}.jpg")
    (folder / "3.jpg").write_bytes(_jpeg_without_scan())
    ds = ImageFolderDataset(tmp_path, "train", transform=JEPAEvalTransform(16))
    with pytest.warns(UserWarning, match="native decode failed"):
        batches = list(build_dataloader(ds, batch_size=2, num_workers=1, shuffle=False))
    assert sum(len(b["index"]) for b in batches) == 6 and ds.num_skipped == 1


def test_class_list_from_names_and_file(imagenet_root, tmp_path):
    root, _ = imagenet_root
    ds = ImageFolderDataset(root, "train", class_list=["n00000001", CMC[1]])
    assert ds.classes == sorted(["n00000001", CMC[1]]) and len(ds) == 6
    listing = tmp_path / "classes.txt"
    listing.write_text(f"{CMC[1]}\n\n")
    assert ImageFolderDataset(root, "train", class_list=str(listing)).classes == [CMC[1]]


def test_missing_paths_and_unknown_names(imagenet_root, tmp_path):
    root, _ = imagenet_root
    with pytest.raises(FileNotFoundError, match="expected layout") as error:
        ImageNet100Dataset(tmp_path / "nowhere", "train")
    assert "nowhere" in str(error.value)
    with pytest.raises(FileNotFoundError, match="test"):
        ImageNetDataset(root, "test")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        build_dataset("cifar10", tmp_path)
    with pytest.raises(FileNotFoundError, match="stl10_binary"):
        build_dataset("stl10", tmp_path)
    with pytest.raises(ValueError, match="imagenet100.*synthetic"):
        build_dataset("imagenet200", root)
    with pytest.raises(ValueError, match="transform"):
        build_dataloader(ImageNetDataset(root, "val"), batch_size=2)


def _write_cifar(root, name, archive):
    """Tiny CIFAR in the official python-pickle layout (bytes keys, uint8 (N, 3072) rows)."""
    rng = np.random.default_rng(2)
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    members = {"cifar10": ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                           "test_batch"], "cifar100": ["train", "test"]}[name]
    label_key = b"labels" if name == "cifar10" else b"fine_labels"
    num_classes = 10 if name == "cifar10" else 100
    written = {}
    for member in members:
        data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        labels = rng.integers(0, num_classes, 3).tolist()
        batch = {b"batch_label": b"x", label_key: labels, b"data": data, b"filenames": [b"a.png"] * 3}
        if name == "cifar100":
            batch[b"coarse_labels"] = [0, 0, 0]
        (folder / member).write_bytes(pickle.dumps(batch, protocol=2))
        written[member] = (data, labels)
    meta = {b"label_names": [b"c%d" % i for i in range(10)]} if name == "cifar10" else {
        b"fine_label_names": [b"f%d" % i for i in range(100)], b"coarse_label_names": [b"k"] * 20}
    (folder / ("batches.meta" if name == "cifar10" else "meta")).write_bytes(pickle.dumps(meta, protocol=2))
    if archive:
        archive_name = "cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz"
        with tarfile.open(root / archive_name, "w:gz") as tar:
            tar.add(folder, arcname=folder.name)
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    return written


@pytest.mark.parametrize("name,archive", [("cifar10", False), ("cifar100", True)])
def test_cifar_exact_pixels_and_labels(tmp_path, name, archive):
    written = _write_cifar(tmp_path, name, archive)
    train = build_dataset(name, tmp_path, "train", image_size=32)
    test = build_dataset(name, tmp_path, "test", image_size=32)
    train_members = [m for m in written if "test" not in m]
    expected = np.concatenate([written[m][0] for m in train_members]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    assert train.images.dtype == np.uint8 and np.array_equal(train.images, expected)
    assert train.labels.tolist() == sum((written[m][1] for m in train_members), [])
    assert len(test) == 3 and test.num_classes == (10 if name == "cifar10" else 100)
    last_row = written[train_members[-1]][0][-1]  # channel planes of 32x32, rows first
    assert train[len(train) - 1]["image"][5, 7].tolist() == [last_row[c * 1024 + 5 * 32 + 7] for c in range(3)]


def test_cifar_unpickler_refuses_code():
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_pickle(pickle.dumps({b"data": Exploit()}, protocol=2))
    assert load_pickle(pickle.dumps({b"x": np.arange(3, dtype=np.uint8)}, protocol=5))[b"x"].tolist() == [0, 1, 2]


def test_stl10_column_major_planes_and_labels(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    images = {part: rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8) for part, n in
              (("train", 3), ("test", 2), ("unlabeled", 4))}
    for part, array in images.items():
        (folder / f"{part}_X.bin").write_bytes(array.transpose(0, 3, 2, 1).tobytes())  # [c][x][y], column-major
    (folder / "train_y.bin").write_bytes(bytes([1, 10, 4]))
    (folder / "test_y.bin").write_bytes(bytes([2, 3]))
    train = build_dataset("stl10", tmp_path, "train", image_size=32)
    assert train.labels.tolist() == [0, 9, 3] and train.num_classes == 10
    assert all(np.array_equal(train[i]["image"], images["train"][i]) for i in range(3))
    both = build_dataset("stl10", tmp_path, "train+unlabeled", image_size=32)
    assert len(both) == 7 and both.labels[3:].tolist() == [-1] * 4
    assert np.array_equal(both[5]["image"], images["unlabeled"][2])
    assert len(build_dataset("stl10", tmp_path, "test")) == 2


def test_synthetic_is_deterministic_balanced_and_not_colour_coded():
    generate = make_synthetic.__wrapped__  # bypass the in-process cache
    images, labels = generate("train", 1000, 32, seed=0)
    again, labels_again = generate("train", 1000, 32, seed=0)
    other, _ = generate("train", 1000, 32, seed=1)
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    assert not np.array_equal(images, other)
    assert images.shape == (1000, 32, 32, 3) and np.bincount(labels).tolist() == [100] * 10
    val_images, val_labels = generate("val", 500, 32, seed=0)
    assert not np.array_equal(val_images[:10], images[:10])

    # Global colour statistics must not give the class away (chance is 10%).
    def stats(x):
        pixels = x.reshape(len(x), -1, 3).astype(np.float64)
        return np.concatenate([pixels.mean(1), pixels.std(1), np.ones((len(x), 1))], axis=1)

    weights = np.linalg.lstsq(stats(images), np.eye(10)[labels], rcond=None)[0]
    assert (stats(val_images) @ weights).argmax(1).__eq__(val_labels).mean() < 0.3


def test_synthetic_draws_one_large_figure_on_a_flat_background():
    images, _ = make_synthetic.__wrapped__("val", 200, 32, seed=0)
    assert all(len(np.unique(image.reshape(-1, 3), axis=0)) == 2 for image in images)
    # Corners are always background; the figure is large enough for 8 px target blocks to land on it.
    figure = (images != images[:, :1, :1]).any(axis=-1).mean(axis=(1, 2))
    assert figure.min() > 0.05 and figure.mean() > 0.2


def test_synthetic_through_build_dataset():
    ds = build_dataset("synthetic", split="val", image_size=16, num_samples=50, resolution=24)
    assert len(ds) == 50 and ds.num_classes == 10 and ds.image_shape == (24, 24, 3)
    batch = next(iter(build_dataloader(ds, batch_size=50, shuffle=False)))
    assert batch["image"].shape == (50, 16, 16, 3) and np.array_equal(batch["label"], ds.labels)

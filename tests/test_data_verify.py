"""`verify` checks what the loaders read: same image extensions, class lists, CIFAR unpickler and STL-10 sizes."""

import io
import os
import pickle

import numpy as np
import pytest
from fake_data import fake_cifar, fake_stl10
from PIL import Image

from mlx_hjepa.data import CIFARDataset, ImageFolderDataset, STL10Dataset
from mlx_hjepa.data.__main__ import main
from mlx_hjepa.data.verify import verify_dataset


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # keep rich from wrapping the report lines the tests look for


def image_bytes(seed, fmt):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def image_folder(root, splits=("train", "val"), classes=("cat", "dog")):
    """Per class: two JPEGs and a PNG (read by the loader), a GIF and a text file (both ignored by it)."""
    for split in splits:
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            (folder / "a.jpg").write_bytes(image_bytes(c, "JPEG"))
            (folder / "b.JPEG").write_bytes(image_bytes(c + 10, "JPEG"))
            (folder / "c.png").write_bytes(image_bytes(c + 20, "PNG"))
            (folder / "d.gif").write_bytes(image_bytes(c + 30, "GIF"))
            (folder / "notes.txt").write_text("not an image")
    return root


def by_name(checks):
    return {c.name: c for c in checks}


def test_imagefolder_counts_the_files_the_loader_reads(tmp_path, capsys):
    root = image_folder(tmp_path / "pets")
    checks = by_name(verify_dataset("imagefolder", root, min_free_gb=0))
    assert [c.name for c in checks.values() if c.status != "ok"] == []
    for split in ("train", "val"):
        n = len(ImageFolderDataset(root, split))
        assert checks[f"{split} images"].detail == f"{n} images; 4 non-image files ignored"  # the GIFs and notes
    assert checks["train/ classes"].detail == "2 class folders"

    assert main(["verify", "imagefolder", "--root", str(root), "--counts", "train=6", "val=6"]) == 0
    assert "all checks passed" in capsys.readouterr().out
    assert main(["verify", "imagefolder", "--root", str(root), "--counts", "train=8"]) == 1  # GIFs are not counted
    assert "6 images, expected 8" in capsys.readouterr().out


def test_imagefolder_val_is_optional_unless_counted(tmp_path, capsys):
    root = image_folder(tmp_path / "pets", splits=("train",))
    checks = by_name(verify_dataset("imagefolder", root, min_free_gb=0))
    assert checks["val/"].status == "warn" and not [c for c in checks.values() if c.status == "fail"]
    assert main(["verify", "imagefolder", "--root", str(root)]) == 0
    assert main(["verify", "imagefolder", "--root", str(root), "--counts", "val=6"]) == 1
    assert main(["verify", "imagefolder", "--root", str(tmp_path / "pets" / "train")]) == 1  # no train/ below it
    assert "does not exist" in capsys.readouterr().out


def test_imagefolder_classes_must_agree_between_splits_and_with_the_list(tmp_path, capsys):
    root = image_folder(tmp_path / "pets")
    (root / "val" / "dog").rename(root / "val" / "wolf")
    assert main(["verify", "imagefolder", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "train/val classes" in out and "2 classes are in only one split: dog, wolf" in out

    class_list = tmp_path / "classes.txt"
    class_list.write_text("# pets\ncat\nbird\n")
    checks = by_name(verify_dataset("imagefolder", root, class_list=class_list, min_free_gb=0))
    assert checks["class list"].detail.startswith("2 classes")
    assert checks["train/ classes"].status == "fail" and "1/2 listed class folders" in checks["train/ classes"].detail
    assert "1 other folders ignored" in checks["train/ classes"].detail


def test_imagefolder_broken_image_and_empty_class(tmp_path, capsys):
    root = image_folder(tmp_path / "pets")
    (root / "train" / "cat" / "a.jpg").write_bytes(image_bytes(0, "JPEG")[:30])
    (root / "train" / "bird").mkdir()
    assert main(["verify", "imagefolder", "--root", str(root), "--sample", "100"]) == 1
    out = capsys.readouterr().out
    assert "do not decode" in out and "1 class folders hold no images: bird" in out


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles_the_loader_reads_pass_verify(tmp_path, name):
    # Python 3 writes protocol-2 bytes through _codecs.encode: the shared unpickler allows it (latin1 only).
    fake_cifar(tmp_path, name, rows=4)
    n_train = len(CIFARDataset(tmp_path, "train", name=name))
    checks = by_name(verify_dataset(name, tmp_path, counts={"train": n_train, "test": 4}, min_free_gb=0))
    assert [c.name for c in checks.values() if c.status != "ok"] == []
    assert checks["train images"].detail.startswith(f"{n_train} 32x32 images")


def test_verify_and_loader_refuse_the_same_hostile_pickle(tmp_path, capsys):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    fake_cifar(tmp_path, "cifar10", rows=2)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Exploit()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        CIFARDataset(tmp_path, "test", name="cifar10")
    assert main(["verify", "cifar10", "--root", str(tmp_path), "--counts", "train=10", "test=2"]) == 1
    out = capsys.readouterr().out
    assert "refusing to load" in out and "system" in out and "pwned" not in out


def test_stl10_verify_agrees_with_the_loader(tmp_path, capsys):
    fake_stl10(tmp_path, rows=3)
    folder = tmp_path / "stl10_binary"
    (folder / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    counts = {split: len(STL10Dataset(tmp_path, split)) for split in ("train", "test", "unlabeled")}
    checks = by_name(verify_dataset("stl10", tmp_path, counts=counts, min_free_gb=0))
    assert [c.name for c in checks.values() if c.status != "ok"] == []
    with open(folder / "test_X.bin", "ab") as f:
        f.write(b"\0" * 10)  # no longer a whole number of images: the loader refuses it too
    with pytest.raises(ValueError, match="truncated"):
        STL10Dataset(tmp_path, "test")
    assert main(["verify", "stl10", "--root", str(tmp_path), "--counts", "train=3", "test=3", "unlabeled=3"]) == 1
    assert "not a whole number of 96x96x3 images" in capsys.readouterr().out

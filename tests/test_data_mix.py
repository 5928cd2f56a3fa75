"""Multi-dataset pretraining as the ImageNet-100 integration describes it: splits, weights, weight
schedules, custom class lists, the integration's constructors and entry points."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_data import fake_cifar, fake_imagenet, fake_stl10

from mlx_hjepa import config as C
from mlx_hjepa.data import (ArrayDataset, CIFARDataset, ImageFolderDataset, ImageNet100Dataset, JEPAEvalTransform,
                            JEPATransform, WeightedMultiDataset, build_dataloader, build_dataset, build_eval_datasets,
                            build_train_dataset)
from mlx_hjepa.data import __main__ as data_cli
from mlx_hjepa.data import build as build_module
from mlx_hjepa.rules import SAMPLING_STRATEGIES, WEIGHTED_STRATEGIES

ROOT = Path(__file__).parent.parent
WNIDS = sorted(ImageNet100Dataset.CLASSES)[:3]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    fake_imagenet(root / "imagenet", WNIDS + ["n09999999"])  # three CMC classes and one outside the list
    fake_cifar(root, "cifar10")
    fake_stl10(root, rows=3)  # 3 train, 3 test, 3 unlabeled
    return root


def mix_config(roots, *entries, **data):
    raw = {"data": {"use_multi_dataset": True, "data_path": str(roots), "image_size": 32, "datasets": list(entries),
                    **data}, "model": {"patch_size": 8, "num_hierarchies": 2}}
    return C.load_config(raw)


def one_config(roots, name, **data):
    return C.load_config({"data": {"dataset": name, "data_path": str(roots), "image_size": 32, **data},
                          "model": {"patch_size": 8, "num_hierarchies": 2}})


# ---------------------------------------------------------------- 1. splits

def test_stl10_pretrains_on_train_plus_unlabeled_and_evaluates_on_the_labelled_splits(roots):
    mix = build_train_dataset(mix_config(roots, {"name": "stl10"}, {"name": "cifar10"}))
    stl = mix.datasets[0]
    assert stl.split == "train+unlabeled" and len(stl) == 6 and mix.get_dataset_stats()["stl10"]["size"] == 6
    assert (stl.labels == -1).sum() == 3  # the unlabeled images are in the stream
    chosen = build_train_dataset(mix_config(roots, {"name": "stl10", "split": "train"}))
    assert chosen.datasets[0].split == "train" and len(chosen.datasets[0]) == 3
    assert len(build_train_dataset(one_config(roots, "stl10"))) == 6
    assert build_train_dataset(one_config(roots, "stl10", split="unlabeled")).split == "unlabeled"
    bank, query = build_eval_datasets(one_config(roots, "stl10"))
    assert (bank.split, query.split) == ("train", "test") and (bank.labels >= 0).all()
    with pytest.raises(C.ConfigError, match=r"data.datasets\[0\].split' is 'val'; stl10 has splits"):
        mix_config(roots, {"name": "stl10", "split": "val"})


def test_training_splits_get_the_training_transform(roots):
    dataset = build_train_dataset(one_config(roots, "stl10", split="test"))  # pretraining on test: still augmented
    assert isinstance(dataset.transform, JEPATransform)


# ---------------------------------------------------------------- 2. weights and strategies

def _arrays(sizes, side=20):
    rng = np.random.default_rng(0)
    return [ArrayDataset(rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8), np.zeros(n), ["c"], name=f"d{i}")
            for i, n in enumerate(sizes)]


@pytest.mark.parametrize("strategy", [s for s in SAMPLING_STRATEGIES if s not in WEIGHTED_STRATEGIES])
def test_strategies_that_ignore_weights_refuse_them(roots, strategy):
    with pytest.raises(ValueError, match=f"'{strategy}'.*would be ignored"):
        WeightedMultiDataset(_arrays([10, 10]), [0.7, 0.3], strategy)
    mix = WeightedMultiDataset(_arrays([10, 10]), None, strategy)  # the default weights are fine
    with pytest.raises(ValueError, match="use sampling_strategy: weighted"):
        mix.weights = [2, 1]
    with pytest.raises(C.ConfigError, match="would be ignored"):
        mix_config(roots, {"name": "cifar10", "weight": 0.7}, {"name": "stl10", "weight": 0.3},
                   sampling_strategy=strategy)
    stats = WeightedMultiDataset(_arrays([10, 30]), None, strategy).get_dataset_stats()
    assert all(s["weight"] is None for s in stats.values())  # nothing to show as a weight


@pytest.mark.parametrize("strategy", WEIGHTED_STRATEGIES)
def test_drawn_shares_over_an_epoch_match_the_weights(strategy):
    weights = [0.6, 0.3, 0.1]
    mix = WeightedMultiDataset(_arrays([100, 40, 10]), weights, strategy, samples_per_epoch=3000,
                               transform=JEPATransform(8))
    loader = build_dataloader(mix, 100, num_workers=2, seed=5)
    drawn = np.bincount(np.concatenate([b["dataset"] for b in loader.epoch_iter(0)]), minlength=3)
    expected = 3000 * np.array(weights)
    assert drawn.sum() == 3000
    assert np.sum((drawn - expected) ** 2 / expected) < 13.8  # chi-square, 2 dof, p = 0.001
    assert mix.weights == weights and all(type(w) is float for w in mix.weights)
    assert all(type(s["weight"]) is float for s in mix.get_dataset_stats().values())


# ---------------------------------------------------------------- 3. weights that change

def test_weight_schedule_applies_from_its_epoch_and_is_keyed_by_epoch():
    mix = WeightedMultiDataset(_arrays([50, 50]), [1, 0], weight_schedule={2: [0, 1]}, transform=JEPATransform(8))
    share = [np.bincount(mix.dataset_ids[mix.epoch_indices(e, seed=1)], minlength=2).tolist() for e in range(4)]
    assert share == [[100, 0], [100, 0], [0, 100], [0, 100]]
    assert mix.weights_at(1) == [1.0, 0.0] and mix.weights_at(3) == [0.0, 1.0]
    resumed = WeightedMultiDataset(_arrays([50, 50]), [1, 0], weight_schedule={2: [0, 1]})  # a fresh process
    assert np.array_equal(resumed.epoch_indices(3, seed=1), mix.epoch_indices(3, seed=1))


def test_reassigned_weights_apply_from_the_next_epoch_through_the_loader():
    mix = WeightedMultiDataset(_arrays([20, 20]), [1, 0], samples_per_epoch=40, transform=JEPATransform(8))
    loader = build_dataloader(mix, 10, num_workers=0)
    first = np.concatenate([b["dataset"] for b in loader])
    mix.weights = [0.0, 1.0]  # between epochs, as the integration's curriculum does
    second = np.concatenate([b["dataset"] for b in loader])
    assert set(first.tolist()) == {0} and set(second.tolist()) == {1}


def test_schedule_in_the_config_short_and_long_form(roots):
    entries = ({"name": "cifar10", "weight": 0.6}, {"name": "stl10", "weight": 0.4})
    short = mix_config(roots, *entries, weight_schedule={3: [0.9, 0.1]})
    long = mix_config(roots, *entries, weight_schedule=[{"from_epoch": 3, "weights": [0.9, 0.1]}])
    assert short.data.weight_schedule == long.data.weight_schedule
    assert C.load_config(C.config_to_dict(short)) == short
    mix = build_train_dataset(short)
    assert mix.weights_at(2) == [0.6, 0.4] and mix.weights_at(3) == [0.9, 0.1]
    for schedule, words in (({3: [1.0]}, "give 2 weights"), ({500: [1, 1]}, "from_epoch' is 500"),
                            ({0: [0.5, 0.5]}, "both set the weights of epoch 0")):
        with pytest.raises(C.ConfigError, match=words):
            mix_config(roots, *entries, weight_schedule=schedule)
    with pytest.raises(C.ConfigError, match="needs sampling_strategy: weighted"):
        mix_config(roots, {"name": "cifar10"}, {"name": "stl10"}, sampling_strategy="balanced",
                   weight_schedule={1: [1, 1]})
    with pytest.raises(C.ConfigError, match="only applies to a weighted mix"):
        one_config(roots, "cifar10", weight_schedule={1: [1]})


def test_a_mix_built_directly_works_with_the_loader(roots):
    imagenet = ImageNet100Dataset(roots / "imagenet", "train", image_size=32)
    cifar = CIFARDataset(roots, "train", name="cifar10")  # no transform of its own
    batch = next(iter(build_dataloader(WeightedMultiDataset([imagenet, cifar], [0.5, 0.5]), 4, num_workers=0)))
    assert batch["image"].shape == (4, 32, 32, 3)  # the datasets' own transform
    folders = ImageFolderDataset(roots / "imagenet", "train")  # images of several sizes, no transform anywhere
    batch = next(iter(build_dataloader(WeightedMultiDataset([folders, cifar]), 2, num_workers=0)))
    assert batch["image"].shape == (2, 224, 224, 3)  # the default JEPATransform
    same_size = WeightedMultiDataset([cifar, CIFARDataset(roots, "test", name="cifar10")])
    assert next(iter(build_dataloader(same_size, 2, num_workers=0)))["image"].shape == (2, 32, 32, 3)
    with pytest.raises(ValueError, match="different image sizes"):
        WeightedMultiDataset([imagenet, ImageNet100Dataset(roots / "imagenet", "train", image_size=48)])


# ---------------------------------------------------------------- 4. class lists

def test_class_list_in_training_and_evaluation(roots, tmp_path):
    listed = tmp_path / "classes.txt"
    listed.write_text("# two of them\n" + "\n".join(WNIDS[:2]) + "\n")
    imagenet = str(roots / "imagenet")
    for name in ("imagenet", "imagenet100", "imagefolder"):
        for class_list in (WNIDS[:2], str(listed)):
            cfg = C.load_config({"data": {"dataset": name, "data_path": imagenet, "image_size": 32,
                                          "class_list": class_list}, "model": {"patch_size": 8, "num_hierarchies": 2}})
            assert build_train_dataset(cfg).classes == WNIDS[:2]
            assert [d.classes for d in build_eval_datasets(cfg)] == [WNIDS[:2]] * 2
    mix = build_train_dataset(mix_config(roots, {"name": "imagenet100", "path": imagenet, "class_list": ["n09999999"]},
                                         {"name": "cifar10"}))
    assert mix.datasets[0].classes == ["n09999999"]  # any synsets, not only the CMC ones
    with pytest.raises(C.ConfigError, match="cifar10 has a fixed set of classes"):
        one_config(roots, "cifar10", class_list=["a"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_train_dataset(one_config(roots, "imagenet100", data_path=imagenet, class_list="missing.txt"))


def test_verify_takes_the_same_class_list(roots, tmp_path, capsys):
    listed = tmp_path / "two.txt"
    listed.write_text("\n".join(WNIDS[:2]))
    for name in ("imagenet", "imagenet100"):
        assert data_cli.main(["verify", name, "--root", str(roots / "imagenet"), "--class-list", str(listed)]) == 0
        out = capsys.readouterr().out
        assert "2 classes from" in out and "2 class folders; 2 other folders ignored" in out


def test_imagenet100_classes_are_public_and_the_subclass_recipe_is_refused_or_honoured(roots):
    assert len(ImageNet100Dataset.CLASSES) == 100

    class Three(ImageNet100Dataset):
        CLASSES = WNIDS

    assert Three(roots / "imagenet", "train").classes == WNIDS
    with pytest.raises(TypeError, match="never reads; set CLASSES"):
        class Custom(ImageNet100Dataset):  # the PyTorch integration's recipe
            CUSTOM_CLASSES = WNIDS[:1]

            def _filter_classes(self):
                pass


# ---------------------------------------------------------------- 6. the integration's entry points

def test_imagenet100_takes_the_integrations_arguments(roots):
    train = ImageNet100Dataset(roots / "imagenet", "train", image_size=64, color_jitter=0.4)
    assert isinstance(train.transform, JEPATransform) and train.transform.image_size == 64
    assert train.transform.color_jitter == 0.4
    val = ImageNet100Dataset(roots / "imagenet", "val", image_size=64)
    assert isinstance(val.transform, JEPAEvalTransform) and val.transform.image_size == 64
    assert ImageNet100Dataset(roots / "imagenet", "train").transform is None


def test_build_dataset_download(roots, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="cannot be downloaded by a script.*download_imagenet100.sh"):
        build_dataset("imagenet100", tmp_path, download=True)
    fetched = []

    def fake_download(name, root):
        fetched.append(name)
        fake_cifar(Path(root), name)

    monkeypatch.setattr(build_module, "download_dataset", fake_download)
    assert len(build_dataset("cifar10", roots, download=True)) == 20 and fetched == []  # already there
    assert len(build_dataset("cifar10", tmp_path, download=True)) == 20 and fetched == ["cifar10"]


def _download_script():
    spec = importlib.util.spec_from_file_location("download_data", ROOT / "scripts" / "download_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_download_data_script_is_the_data_cli(roots, tmp_path, monkeypatch, capsys):
    script = _download_script()
    fetched = []
    monkeypatch.setattr(data_cli, "download_dataset",
                        lambda name, root, **kw: fetched.append((name, str(root))) or fake_cifar(root, name))
    assert script.main(["--dataset", "cifar10", "--data-path", str(tmp_path)]) == 1  # fake: not the official counts
    assert fetched == [("cifar10", str(tmp_path))] and "verify cifar10" in capsys.readouterr().out
    assert script.main(["--dataset", "imagenet100", "--verify-only", "--data-path", str(roots / "imagenet")]) == 1
    out = capsys.readouterr().out
    assert "verify imagenet100" in out and "3/100 ImageNet-100 class folders" in out and len(fetched) == 1
    assert script.main(["--dataset", "imagenet100"]) == 1
    assert "scripts/download_imagenet100.sh" in capsys.readouterr().err


def test_data_download_imagenet100_points_at_the_script():
    result = subprocess.run([sys.executable, "-m", "mlx_hjepa.data", "download", "imagenet100"], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 1 and "invalid choice" not in result.stderr
    assert "scripts/download_imagenet100.sh" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- 8. small things

def test_missing_split_message_shows_that_split(roots, tmp_path):
    (tmp_path / "train" / "n01440764").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as error:
        ImageNet100Dataset(tmp_path, "val")
    assert f"{tmp_path}/val/n01440764/" in str(error.value) and f"{tmp_path}/train/n0" not in str(error.value)

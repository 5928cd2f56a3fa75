"""Loader, sampling and transforms: determinism across threads, resume, sharding, mixes, crop statistics."""

import numpy as np
import pytest

from mlx_hjepa.data import (ArrayDataset, JEPAEvalTransform, JEPATransform, WeightedMultiDataset, build_dataloader,
                            build_multi_dataset, random_resized_crop_params)
from mlx_hjepa.data.transforms import apply_jitter


def _array_dataset(size, name, side=24, seed=0, transform=None):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (size, side, side, 3), dtype=np.uint8)
    return ArrayDataset(images, np.arange(size) % 5, [f"c{i}" for i in range(5)], name=name, transform=transform)


TRAIN = JEPATransform(16, crop_scale=(0.3, 1.0), color_jitter=0.4, horizontal_flip=True)


def _epoch(loader, epoch=0, start_batch=0):
    return list(loader.epoch_iter(epoch, start_batch=start_batch))


def _same(a, b):
    return len(a) == len(b) and all(
        set(x) == set(y) and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def test_same_seed_same_batches_with_0_1_2_threads():
    ds = _array_dataset(40, "a", transform=TRAIN)
    runs = [_epoch(build_dataloader(ds, 8, num_workers=n, seed=3)) for n in (0, 1, 2)]
    assert _same(runs[0], runs[1]) and _same(runs[0], runs[2])
    batch = runs[0][0]
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (8, 16, 16, 3)
    assert batch["label"].dtype == np.int32 and batch["dataset"].dtype == np.int32
    assert batch["index"].dtype == np.int64
    assert np.array_equal(batch["label"], ds.labels[batch["index"]])
    other_seed = _epoch(build_dataloader(ds, 8, num_workers=2, seed=4))
    assert not np.array_equal(other_seed[0]["image"], batch["image"])


def test_epochs_reshuffle_and_resume_mid_epoch_is_exact():
    ds = _array_dataset(50, "a", transform=TRAIN)
    loader = build_dataloader(ds, 8, num_workers=2, seed=0)
    assert len(loader) == 6  # drop_last follows shuffle
    first = list(loader)
    second = list(loader)  # iterating advances the epoch
    assert loader.epoch == 2
    assert not np.array_equal(first[0]["index"], second[0]["index"])
    assert _same(_epoch(loader, 1, start_batch=4), second[4:])
    assert _same(_epoch(loader, 0), first)
    order = np.concatenate([b["index"] for b in first])
    assert len(set(order.tolist())) == len(order) == 48


def test_two_ranks_are_disjoint_and_complete():
    ds = _array_dataset(30, "a", transform=JEPAEvalTransform(16))
    for shuffle in (False, True):
        ranks = [_epoch(build_dataloader(ds, 4, num_workers=1, shuffle=shuffle, drop_last=False, world_size=2,
                                         rank=r)) for r in (0, 1)]
        seen = [np.concatenate([b["index"] for b in batches]) for batches in ranks]
        assert len(seen[0]) == len(seen[1]) == 15
        assert not set(seen[0]) & set(seen[1]) and set(seen[0]) | set(seen[1]) == set(range(30))
    train = [build_dataloader(ds, 4, world_size=2, rank=r, transform=TRAIN) for r in (0, 1)]
    assert len(train[0]) == len(train[1]) == 3  # 30 // (2 * 4) full batches on each rank
    resumed = _epoch(train[1], 0, start_batch=1)
    assert _same(resumed, _epoch(train[1], 0)[1:])


def test_eval_keeps_every_sample_in_order_with_a_short_last_batch():
    ds = _array_dataset(10, "a", transform=JEPAEvalTransform(16))
    batches = _epoch(build_dataloader(ds, 4, shuffle=False))
    assert [len(b["index"]) for b in batches] == [4, 4, 2]
    assert np.concatenate([b["index"] for b in batches]).tolist() == list(range(10))


def _mix(strategy, weights=(0.6, 0.3, 0.1), samples_per_epoch=None):
    datasets = [_array_dataset(size, name, seed=i) for i, (size, name) in
                enumerate([(100, "big"), (40, "mid"), (10, "small")])]
    return WeightedMultiDataset(datasets, list(weights), strategy, samples_per_epoch, transform=TRAIN)


def test_weighted_proportions_pass_a_chi_square_test():
    mix = _mix("weighted", samples_per_epoch=6000)
    ids = mix.epoch_indices(epoch=0, seed=0)
    counts = np.bincount(mix.dataset_ids[ids], minlength=3)
    expected = 6000 * np.array([0.6, 0.3, 0.1])
    assert np.sum((counts - expected) ** 2 / expected) < 13.8  # chi-square, 2 dof, p = 0.001
    small = ids[mix.dataset_ids[ids] == 2] - mix.offsets[2]  # uniform within a dataset too
    per_sample = np.bincount(small, minlength=10)
    assert np.sum((per_sample - 60) ** 2 / 60) < 27.9  # 9 dof, p = 0.001
    assert not np.array_equal(ids, mix.epoch_indices(epoch=1, seed=0))
    stats = mix.get_dataset_stats()
    assert stats["small"] == {"size": 10, "split": None, "weight": pytest.approx(0.1), "expected_samples_per_epoch": 600}

    small_epoch = _mix("weighted", samples_per_epoch=200)
    batches = _epoch(build_dataloader(small_epoch, 50, num_workers=2))
    dataset_ids = np.concatenate([b["dataset"] for b in batches])
    assert np.array_equal(dataset_ids, small_epoch.dataset_ids[np.concatenate([b["index"] for b in batches])])


def test_weights_are_validated_and_apply_from_the_next_epoch():
    mix = _mix("weighted", samples_per_epoch=1000)
    for bad, message in (([1, -1, 1], ">= 0"), ([0, 0, 0], "all zero"), ([1, float("nan"), 1], "finite"),
                         ([1, 1], "3 datasets")):
        with pytest.raises(ValueError, match=message):
            mix.weights = bad
    mix.weights = [0, 0, 1]
    assert set(mix.dataset_ids[mix.epoch_indices(5)].tolist()) == {2}
    with pytest.raises(ValueError, match="unknown sampling strategy"):
        _mix("round-robin")
    with pytest.raises(ValueError, match="weights"):
        build_multi_dataset([{"name": "synthetic", "weight": -1}], image_size=16)


def test_balanced_and_concat_counts():
    balanced = _mix("balanced", weights=(1, 1, 1), samples_per_epoch=300)
    ids = balanced.epoch_indices(0)
    assert np.bincount(balanced.dataset_ids[ids]).tolist() == [100, 100, 100]
    small = np.bincount(ids[balanced.dataset_ids[ids] == 2] - 140, minlength=10)
    assert small.tolist() == [10] * 10  # whole permutations of the small dataset
    concat = _mix("concat", weights=(1, 1, 1))
    assert sorted(concat.epoch_indices(0).tolist()) == list(range(150))


def test_multi_dataset_from_configs_labels_and_sizes():
    mix = build_multi_dataset([{"name": "synthetic", "weight": 3, "num_samples": 30, "resolution": 16},
                               {"name": "synthetic", "weight": 1, "num_samples": 10, "resolution": 32, "seed": 1}],
                              split="train", image_size=16)
    assert len(mix) == 40 and mix.num_classes == 20 and list(mix.get_dataset_stats()) == ["synthetic", "synthetic#2"]
    batch = next(iter(build_dataloader(mix, 8)))
    assert batch["image"].shape == (8, 16, 16, 3)  # 16 px and 32 px sources meet at one size
    assert np.array_equal(batch["label"], mix.labels[batch["index"]])


def test_random_resized_crop_statistics():
    rng = np.random.default_rng(0)
    height, width = 400, 400  # square, so rejected tries do not favour one orientation
    boxes = np.array([random_resized_crop_params(rng, height, width, (0.3, 1.0)) for _ in range(3000)])
    top, left, h, w = boxes.T
    assert np.all((top >= 0) & (left >= 0) & (top + h <= height) & (left + w <= width))
    area = h * w / (height * width)
    ratio = w / h
    assert area.min() > 0.29 and area.max() <= 1.0 and abs(area.mean() - 0.6) < 0.05
    assert ratio.min() > 0.74 and ratio.max() < 1.35
    assert abs(np.log(ratio).mean()) < 0.03  # log-uniform ratio is symmetric about 1
    # No try fits a 10:1 strip with a large area: centre crop at the widest allowed ratio.
    assert random_resized_crop_params(rng, 20, 200, (0.9, 1.0)) == (0, (200 - 27) // 2, 20, 27)


def test_flip_jitter_and_eval_transforms():
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, 16:] = 200
    flip = JEPATransform(32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), horizontal_flip=True)
    outputs = {flip(image, seed=s)[0, 0, 0] for s in range(20)}
    assert outputs == {0, 200}
    evaluated = JEPAEvalTransform(16)(np.repeat(image, 2, axis=1))  # 32x64 -> short side 18 -> centre 16
    assert evaluated.shape == (16, 16, 3) and evaluated[:, :7].max() == 0 and evaluated[:, 9:].min() == 200
    upsized = JEPATransform(48)(np.full((8, 8, 3), 90, np.uint8))
    assert upsized.shape == (48, 48, 3) and np.all(upsized == 90)

    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    identity = np.array([1, 1, 1, 0, 0, 1, 2, 3], np.float32)
    assert np.abs(apply_jitter(pixels, identity).astype(int) - pixels).max() <= 1
    darker = np.array([0.5, 1, 1, 0, 0, 1, 2, 3], np.float32)
    assert np.abs(apply_jitter(pixels, darker).astype(int) - pixels * 0.5).max() <= 1
    grey = apply_jitter(pixels, np.array([1, 1, 0, 0, 2, 0, 1, 3], np.float32))
    assert np.abs(grey.astype(int) - grey[..., :1]).max() <= 1
    jittered = JEPATransform(16, color_jitter=0.4)(pixels.repeat(4, 0).repeat(4, 1), seed=1)
    assert jittered.shape == (16, 16, 3) and jittered.dtype == np.uint8


def test_hue_rotation_keeps_grey_and_turns_colour():
    grey = np.full((4, 4, 3), 128, np.uint8)
    quarter_turn = np.array([1, 1, 1, 0.25, 3, 0, 1, 2], np.float32)
    assert np.abs(apply_jitter(grey, quarter_turn).astype(int) - 128).max() <= 1
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 200
    turned = apply_jitter(red, quarter_turn)[0, 0].astype(int)
    assert turned[0] < 150 and max(turned[1], turned[2]) > 50

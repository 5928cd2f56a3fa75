"""Several datasets as one: weighted, balanced or concatenated sampling, drawn afresh every epoch.

Samples are numbered globally: dataset k's sample j is ``offsets[k] + j``. Each epoch
``epoch_indices(epoch, seed)`` draws the epoch's list of global ids:

- ``weighted``: ``samples_per_epoch`` draws with replacement, sample i of dataset k
  with probability proportional to weight_k / size_k (so dataset k gets a share
  weight_k / sum(weights) of the epoch whatever its size);
- ``balanced``: the same count from every dataset (cycling through fresh
  permutations of a dataset that is too small), shuffled together;
- ``concat``: every sample of every dataset once, shuffled.
"""

import math

import numpy as np

from .sources import ImageSource

STRATEGIES = ("weighted", "balanced", "concat")


def validate_weights(weights, count):
    """Return ``weights`` as a float64 array, or raise ValueError saying what is wrong."""
    try:
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"dataset weights must be numbers, got {weights!r}.") from None
    if len(weights) != count:
        raise ValueError(f"got {len(weights)} dataset weights for {count} datasets; give one weight per dataset.")
    if not np.all(np.isfinite(weights)):
        raise ValueError(f"dataset weights must be finite numbers, got {weights.tolist()}.")
    if np.any(weights < 0):
        raise ValueError(f"dataset weights must be >= 0, got {weights.tolist()}.")
    if weights.sum() <= 0:
        raise ValueError("dataset weights are all zero; give at least one dataset a positive weight.")
    return weights


class WeightedMultiDataset(ImageSource):
    """A mix of datasets sampled by ``strategy`` ("weighted", "balanced" or "concat").

    Args:
        datasets: list of datasets (any ``ImageSource``: folders, CIFAR, STL-10, synthetic).
        weights: one weight per dataset (used by "weighted"); default all equal.
        strategy: sampling strategy, see the module docstring.
        samples_per_epoch: draws per epoch for "weighted"/"balanced"; default the sum of sizes.
        transform: the transform applied to every sample (all must end at one image size).

    ``weights`` can be reassigned (validated); the new weights apply from the next epoch.
    Labels are offset per dataset so they are unique across the mix (``classes`` are
    "name/class"); the batch's "dataset" entry says which dataset a sample came from.
    """

    def __init__(self, datasets, weights=None, strategy="weighted", samples_per_epoch=None, transform=None,
                 name="mix"):
        if not datasets:
            raise ValueError("build a multi-dataset from at least one dataset.")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown sampling strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}.")
        self.datasets = list(datasets)
        self.strategy = strategy
        self.weights = [1.0] * len(self.datasets) if weights is None else weights
        self.sizes = np.array([len(d) for d in self.datasets], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        if samples_per_epoch is not None and int(samples_per_epoch) <= 0:
            raise ValueError(f"samples_per_epoch must be positive, got {samples_per_epoch}.")
        self._samples_per_epoch = None if samples_per_epoch is None else int(samples_per_epoch)
        self.transform = transform
        self.name = name
        self.names = _unique_names([d.name for d in self.datasets])
        class_offsets = np.cumsum([0] + [d.num_classes for d in self.datasets])
        self.classes = [f"{n}/{c}" for n, d in zip(self.names, self.datasets) for c in d.classes]
        self.labels = np.concatenate([
            np.where(d.labels >= 0, d.labels + class_offsets[k], -1) for k, d in enumerate(self.datasets)
        ]).astype(np.int32)
        self.dataset_ids = np.repeat(np.arange(len(self.datasets), dtype=np.int32), self.sizes)

    @property
    def weights(self):
        return list(self._weights)

    @weights.setter
    def weights(self, weights):
        self._weights = validate_weights(weights, len(self.datasets))

    @property
    def samples_per_epoch(self):
        if self.strategy == "concat":
            return int(self.sizes.sum())
        return self._samples_per_epoch or int(self.sizes.sum())

    @property
    def num_skipped(self):
        return sum(d.num_skipped for d in self.datasets)

    def expected_counts(self):
        """Expected samples per epoch from each dataset under the current strategy and weights."""
        total = self.samples_per_epoch
        if self.strategy == "concat":
            return self.sizes.copy()
        if self.strategy == "balanced":
            return _split_evenly(total, len(self.datasets))
        return np.round(total * self._weights / self._weights.sum()).astype(np.int64)

    def get_dataset_stats(self):
        """{name: {"size", "weight", "expected_samples_per_epoch"}} for each dataset in the mix."""
        weights = self._weights / self._weights.sum()
        return {
            name: {"size": int(size), "weight": float(weight), "expected_samples_per_epoch": int(expected)}
            for name, size, weight, expected in zip(self.names, self.sizes, weights, self.expected_counts())
        }

    def epoch_indices(self, epoch, seed=0, shuffle=True):
        rng = np.random.default_rng([seed, epoch, 0x313])
        if self.strategy == "concat":
            ids = np.arange(self.offsets[-1], dtype=np.int64)
        elif self.strategy == "balanced":
            counts = _split_evenly(self.samples_per_epoch, len(self.datasets))
            ids = np.concatenate([
                self.offsets[k] + _draw_without_replacement(rng, size, count)
                for k, (size, count) in enumerate(zip(self.sizes, counts))
            ])
        else:
            share = self._weights / self._weights.sum()
            which = rng.choice(len(self.datasets), size=self.samples_per_epoch, p=share)
            ids = self.offsets[which] + (rng.random(len(which)) * self.sizes[which]).astype(np.int64)
        return rng.permutation(ids) if shuffle else ids

    def _locate(self, index):
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return k, index - int(self.offsets[k])

    def read(self, index, safe=False):
        k, local = self._locate(index)
        return self.datasets[k].read(local, safe)

    def load(self, index, safe=False):
        k, local = self._locate(index)
        encoded, actual = self.datasets[k].load(local, safe)
        return encoded, int(self.offsets[k]) + actual

    def sample_info(self, index):
        return int(self.labels[index]), int(self.dataset_ids[index])

    def __repr__(self):
        parts = ", ".join(f"{n}: {s} x {w:.3g}" for n, s, w in zip(self.names, self.sizes, self._weights))
        return f"WeightedMultiDataset({self.strategy}, {parts})"


def _split_evenly(total, parts):
    counts = np.full(parts, total // parts, dtype=np.int64)
    counts[: total % parts] += 1
    return counts


def _draw_without_replacement(rng, size, count):
    """``count`` indices below ``size``: whole fresh permutations, then part of one more."""
    rounds = math.ceil(count / size)
    return np.concatenate([rng.permutation(size) for _ in range(rounds)])[:count]


def _unique_names(names):
    seen, unique = {}, []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique

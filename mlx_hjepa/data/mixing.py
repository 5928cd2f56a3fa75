"""Several datasets as one: weighted, balanced or concatenated sampling, drawn afresh every epoch.

Samples are numbered globally: dataset k's sample j is ``offsets[k] + j``. Each epoch
``epoch_indices(epoch, seed)`` draws the epoch's list of global ids:

- ``weighted``: ``samples_per_epoch`` draws with replacement, sample i of dataset k
  with probability proportional to weight_k / size_k (so dataset k gets a share
  weight_k / sum(weights) of the epoch whatever its size);
- ``balanced``: the same count from every dataset (cycling through fresh
  permutations of a dataset that is too small), shuffled together;
- ``concat``: every sample of every dataset once, shuffled.

Only ``weighted`` reads weights; the other two refuse weights other than the default.
A weight schedule ``{epoch: weights}`` changes a weighted mix's weights from the epoch it
names; being keyed by epoch, a resumed run draws exactly what an uninterrupted one would.
"""

import math

import numpy as np

from ..rules import DEFAULT_IMAGE_SIZE, SAMPLING_STRATEGIES, WEIGHTED_STRATEGIES, weights_problem
from .sources import ImageSource
from .transforms import JEPATransform


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
        transform: the transform applied to every sample (all must end at one image size);
            default: the datasets' own transform when they agree on an image size, else none
            when every image has one size, else a JEPATransform at 224 px.
        weight_schedule: {epoch: weights}: from each named epoch on, draw with those weights.

    ``weights`` can be reassigned (validated); the new weights apply from the next epoch.
    A weight schedule, when there is one, wins from the first epoch it names.
    Labels are offset per dataset so they are unique across the mix (``classes`` are
    "name/class"); the batch's "dataset" entry says which dataset a sample came from.
    """

    def __init__(self, datasets, weights=None, strategy="weighted", samples_per_epoch=None, transform=None,
                 name="mix", weight_schedule=None):
        if not datasets:
            raise ValueError("build a multi-dataset from at least one dataset.")
        if strategy not in SAMPLING_STRATEGIES:
            raise ValueError(f"unknown sampling strategy {strategy!r}; choose one of {', '.join(SAMPLING_STRATEGIES)}.")
        self.datasets = list(datasets)
        self.strategy = strategy
        self.weights = [1.0] * len(self.datasets) if weights is None else weights
        self.weight_schedule = weight_schedule or {}
        self.sizes = np.array([len(d) for d in self.datasets], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        if samples_per_epoch is not None and int(samples_per_epoch) <= 0:
            raise ValueError(f"samples_per_epoch must be positive, got {samples_per_epoch}.")
        self._samples_per_epoch = None if samples_per_epoch is None else int(samples_per_epoch)
        self.transform = transform if transform is not None else _common_transform(self.datasets)
        if self.transform is None and len({d.image_shape for d in self.datasets}) == 1:
            self.image_shape = self.datasets[0].image_shape
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
        return [float(w) for w in self._weights]

    @weights.setter
    def weights(self, weights):
        self._weights = self._checked(weights)

    @property
    def weight_schedule(self):
        return {epoch: [float(w) for w in weights] for epoch, weights in self._schedule}

    @weight_schedule.setter
    def weight_schedule(self, schedule):
        self._schedule = sorted((int(epoch), self._checked(weights)) for epoch, weights in dict(schedule).items())
        if any(epoch < 0 for epoch, _ in self._schedule):
            raise ValueError(f"weight_schedule epochs must be >= 0, got {sorted(dict(schedule))}.")

    def _checked(self, weights):
        weights = validate_weights(weights, len(self.datasets))
        problem = weights_problem(self.strategy, weights)
        if problem:
            raise ValueError(problem[0].upper() + problem[1:])
        return weights

    def weights_at(self, epoch):
        """The weights epoch ``epoch`` draws with: the schedule's last change at or before it, else ``weights``."""
        current = self._weights
        for start, weights in self._schedule:
            if start <= epoch:
                current = weights
        return [float(w) for w in current]

    @property
    def samples_per_epoch(self):
        if self.strategy == "concat":
            return int(self.sizes.sum())
        return self._samples_per_epoch or int(self.sizes.sum())

    @property
    def num_skipped(self):
        return sum(d.num_skipped for d in self.datasets)

    def expected_counts(self, epoch=0):
        """Expected samples per epoch from each dataset under the strategy and the weights of ``epoch``."""
        total = self.samples_per_epoch
        if self.strategy == "concat":
            return self.sizes.copy()
        if self.strategy == "balanced":
            return _split_evenly(total, len(self.datasets))
        weights = np.asarray(self.weights_at(epoch))
        return np.round(total * weights / weights.sum()).astype(np.int64)

    def get_dataset_stats(self, epoch=0):
        """{name: {"size", "split", "weight", "expected_samples_per_epoch"}} for each dataset in the mix at
        ``epoch``; "weight" is the normalised weight ("weighted"), None where the strategy reads no weights."""
        weights = np.asarray(self.weights_at(epoch))
        weights = weights / weights.sum() if self.strategy in WEIGHTED_STRATEGIES else [None] * len(self.datasets)
        return {
            name: {"size": int(size), "split": getattr(d, "split", None),
                   "weight": None if weight is None else float(weight), "expected_samples_per_epoch": int(expected)}
            for name, d, size, weight, expected in zip(self.names, self.datasets, self.sizes, weights,
                                                       self.expected_counts(epoch))
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
            weights = np.asarray(self.weights_at(epoch))
            share = weights / weights.sum()
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


def _common_transform(datasets):
    """The datasets' own transform when they agree on one output size; a 224 px JEPATransform when
    their images differ in size and none has a transform; None when every image has one size."""
    transforms = [d.transform for d in datasets if d.transform is not None]
    sizes = {t.image_size for t in transforms}
    if len(sizes) > 1:
        raise ValueError(f"the datasets' transforms end at different image sizes {sorted(sizes)}; pass "
                         "transform=JEPATransform(SIZE) so the whole mix has one size.")
    if transforms:
        return transforms[0]
    if len({d.image_shape for d in datasets}) == 1 and datasets[0].image_shape is not None:
        return None
    return JEPATransform(DEFAULT_IMAGE_SIZE)


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

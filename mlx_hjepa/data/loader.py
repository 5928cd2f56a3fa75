"""The epoch loader: index vector -> shard -> read -> native decode -> transform -> batch -> prefetch.

Every epoch starts from the dataset's list of sample ids for that epoch
(``dataset.epoch_indices(epoch, seed, shuffle)``), trimmed so all ranks get the same
number of batches. Positions 0..N-1 in that list go through
``buffer.perm(positions).partition(world_size, rank)``; a Python step maps a position
to its sample, reads the encoded bytes, and keys the sample's random generator by
(seed, epoch, position), so crops and flips do not depend on thread count, rank count
or where an epoch was resumed. mlx-data's ``ordered_prefetch`` then decodes,
transforms and batches on ``num_workers`` threads, in order.

Batches are dicts of numpy arrays:
    "image"   uint8 (B, S, S, 3)
    "label"   int32 (B,)   (-1 for unlabelled samples)
    "dataset" int32 (B,)   (which dataset of a mix; 0 otherwise)
    "index"   int64 (B,)   (the sample's index in the dataset)
"""

import math
import warnings

import numpy as np
import mlx.data as dx

from .transforms import IMAGE_KEY

_POSITION_KEY = "position"


class DataLoader:
    """Batches of a dataset, a fresh order every epoch, resumable at any batch.

    ``len(loader)`` is batches per epoch (per rank). ``iter(loader)`` runs the current
    epoch (``loader.set_epoch(e)``; it advances by one after each complete pass).
    ``loader.epoch_iter(epoch, start_batch=k)`` yields exactly the batches k, k+1, ... of
    that epoch as an uninterrupted pass would.
    """

    def __init__(self, dataset, batch_size, num_workers=2, shuffle=True, drop_last=None, seed=0, world_size=1,
                 rank=0, transform=None, prefetch_batches=None):
        if int(batch_size) <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}.")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.num_workers = max(0, int(num_workers))
        self.shuffle = bool(shuffle)
        self.drop_last = self.shuffle if drop_last is None else bool(drop_last)
        self.seed, self.world_size, self.rank = int(seed), int(world_size), int(rank)
        self.transform = transform if transform is not None else dataset.transform
        if self.transform is None and getattr(dataset, "image_shape", None) is None:
            raise ValueError(f"{dataset.name} holds images of different sizes: pass transform=JEPATransform(...) "
                             "or JEPAEvalTransform(...) so every sample has one size before batching.")
        self.prefetch_batches = prefetch_batches or max(2, 2 * self.num_workers)
        self.epoch = 0
        if len(self) == 0:
            raise ValueError(f"{dataset.name} has {dataset.samples_per_epoch} samples per epoch: too few for one "
                             f"batch of {batch_size} on each of {world_size} ranks with drop_last=True.")

    def _samples_per_rank(self):
        total = self.dataset.samples_per_epoch
        if self.drop_last:
            return (total // (self.world_size * self.batch_size)) * self.batch_size
        return math.ceil(total / self.world_size)

    def __len__(self):
        return math.ceil(self._samples_per_rank() / self.batch_size)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __iter__(self):
        yield from self.epoch_iter(self.epoch)
        self.epoch += 1

    def epoch_order(self, epoch):
        """All ranks' sample ids for ``epoch``, trimmed (drop_last) or wrapped (so ranks get equal shares)."""
        ids = self.dataset.epoch_indices(epoch, self.seed, self.shuffle)
        needed = self._samples_per_rank() * self.world_size
        if needed <= len(ids):
            return ids[:needed]
        return np.resize(ids, needed)  # pad by repeating the start, as torch's DistributedSampler does

    def epoch_iter(self, epoch, start_batch=0):
        """Yield the batches of ``epoch`` from batch ``start_batch`` on (for exact resume)."""
        if start_batch >= len(self):
            return
        try:
            yield from self._iterate(epoch, start_batch, safe=False)
        except _NativeDecodeError as error:
            # mlx-data's decoder rejected a file that looked fine: redo the rest of the
            # epoch decoding every file with PIL (same pixels, slower).
            warnings.warn(f"{self.dataset.name}: native decode failed ({error.cause}); continuing epoch {epoch} "
                          f"from batch {error.batch} with PIL decoding.", stacklevel=2)
            yield from self._iterate(epoch, error.batch, safe=True)

    def _iterate(self, epoch, start_batch, safe):
        order = self.epoch_order(epoch)
        dataset, seed = self.dataset, self.seed

        def read(sample):
            position = int(sample[_POSITION_KEY])
            encoded, index = dataset.load(int(order[position]), safe)
            label, dataset_id = dataset.sample_info(index)
            return {IMAGE_KEY: encoded, _POSITION_KEY: np.int64(position), "label": np.int32(label),
                    "dataset": np.int32(dataset_id), "index": np.int64(index)}

        def rng_for(sample):
            return np.random.default_rng([seed, epoch, int(sample[_POSITION_KEY])])

        # Local position j of this rank is global position j * world_size + rank, so
        # starting at local batch k means starting the global list at k * B * world_size.
        first = start_batch * self.batch_size * self.world_size
        buffer = _positions_buffer(len(order)).perm(np.arange(first, len(order), dtype=np.int64))
        buffer = buffer.partition(self.world_size, self.rank)
        buffer = buffer.sample_transform(read).load_image(IMAGE_KEY, from_memory=True)
        if self.transform is not None:
            buffer = self.transform.attach(buffer, rng_for)
        buffer = buffer.sample_transform(_drop_position).batch(self.batch_size)

        batch_number = start_batch
        try:
            if self.num_workers == 0:
                for i in range(len(buffer)):
                    yield buffer[i]
                    batch_number += 1
            else:
                for batch in buffer.ordered_prefetch(self.prefetch_batches, self.num_workers):
                    yield batch
                    batch_number += 1
        except RuntimeError as error:
            if safe or "load" not in str(error):
                raise
            raise _NativeDecodeError(batch_number, str(error)) from error


class _NativeDecodeError(Exception):
    def __init__(self, batch, cause):
        super().__init__(cause)
        self.batch, self.cause = batch, cause


def _drop_position(sample):
    del sample[_POSITION_KEY]
    return sample


_positions = {}


def _positions_buffer(size):
    """A cached mlx-data buffer of samples {"position": 0..size-1} that each epoch reorders."""
    if size not in _positions:
        if len(_positions) >= 4:
            _positions.clear()
        _positions[size] = dx.buffer_from_vector([{_POSITION_KEY: i} for i in range(size)])
    return _positions[size]


def build_dataloader(dataset, batch_size, num_workers=2, shuffle=True, drop_last=None, seed=0, world_size=1, rank=0,
                     transform=None):
    """Return a ``DataLoader`` (see its docstring); ``drop_last`` defaults to ``shuffle``.

    Training: ``shuffle=True, drop_last=True`` (every batch the same shape). Eval:
    ``shuffle=False, drop_last=False`` (every sample once; the last batch may be short).
    With ``world_size > 1`` each rank gets an equal, disjoint share of the epoch.
    """
    return DataLoader(dataset, batch_size, num_workers=num_workers, shuffle=shuffle, drop_last=drop_last, seed=seed,
                      world_size=world_size, rank=rank, transform=transform)

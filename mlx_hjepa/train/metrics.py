"""What the loop logs: running sums between two log lines (Window), and where records go
(MetricsLog: the run's metrics.jsonl, plus TensorBoard when it is on)."""

import time

import mlx.core as mx
import numpy as np

from ..objective import effective_rank
from .tensorboard import TensorBoardWriter


class MetricsLog:
    """Rank 0's sink for metric records; on other ranks every call does nothing."""

    def __init__(self, run_dir, enabled=True, tensorboard=False, with_mix=True):
        self.run_dir, self.with_mix = (run_dir if enabled else None), with_mix
        self.tensorboard = TensorBoardWriter(run_dir.path / "tensorboard") if enabled and tensorboard else None

    def write(self, record):
        if self.run_dir is None:
            return
        self.run_dir.append_metrics(record)
        if self.tensorboard is not None:
            self.tensorboard.scalars(record["step"], record)

    def flush(self, window, step, epoch, out, **extra):
        """Write the window's record (plus `extra`), start a new window, return the record."""
        record = {**window.record(step, epoch, out, self.with_mix), **extra}
        self.write(record)
        window.reset()
        return record

    def close(self):
        if self.tensorboard is not None:
            self.tensorboard.close()


TERMS = ("variance", "covariance")  # the step's optional VICReg terms, logged unweighted when present


def mix_weights(dataset):
    """epoch -> {dataset name: configured share} for a mix that draws by weight, else None."""
    if not hasattr(dataset, "get_dataset_stats"):
        return None

    def weights(epoch):
        stats = dataset.get_dataset_stats(epoch)
        return None if any(s["weight"] is None for s in stats.values()) else {n: s["weight"] for n, s in stats.items()}
    return weights


class Window:
    """Running sums between two log lines. `weights_of(epoch)` (see mix_weights) puts the mix's
    configured shares beside the drawn counts."""

    def __init__(self, names, world_size=1, weights_of=None):
        self.names, self.world_size = names, world_size  # img/s counts every rank's images
        self.weights_of = weights_of
        self.reset()

    def reset(self):
        self.start = time.perf_counter()
        self.images, self.losses, self.level_losses, self.data_wait = 0, [], [], 0.0
        self.terms = {name: [] for name in TERMS}
        self.mix = np.zeros(len(self.names), dtype=np.int64)

    def add(self, out, loss, batch):
        self.images += len(batch["image"]) * self.world_size
        self.losses.append(loss)
        self.level_losses.append(np.array(out["level_losses"]))
        for name in TERMS:
            if name in out:
                self.terms[name].append(out[name].item())
        self.mix += np.bincount(batch["dataset"], minlength=len(self.names))[: len(self.names)]
        self._last = out

    def record(self, step, epoch, out, with_mix):
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        levels = np.mean(self.level_losses, axis=0)
        rec = {"step": step, "epoch": epoch, "loss": float(np.mean(self.losses)),
               **{f"loss_level{i}": float(v) for i, v in enumerate(levels)},
               "lr": out["lr"].item(), "weight_decay": out["weight_decay"].item(),
               "ema_momentum": out["ema_momentum"].item(), "grad_norm": out["grad_norm"].item(),
               "target_std": self._last["target_std"].item(),
               "effective_rank": effective_rank(self._last["pooled"]),
               "img_per_s": self.images / elapsed, "data_wait_frac": self.data_wait / elapsed,
               "peak_memory_gb": mx.get_peak_memory() / 2**30}
        rec.update({name: float(np.mean(values)) for name, values in self.terms.items() if values})
        if with_mix:
            rec["dataset_mix"] = {n: int(c) for n, c in zip(self.names, self.mix)}
            weights = self.weights_of(epoch) if self.weights_of is not None else None
            if weights is not None:
                rec["dataset_weights"] = weights
        return rec

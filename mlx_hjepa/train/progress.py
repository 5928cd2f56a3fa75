"""Rank-0 progress: a rich bar on a terminal, plain log lines otherwise."""

import sys
import time

import mlx.core as mx
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn


def describe(record):
    levels = " ".join(f"{record[k]:.4f}" for k in sorted(record) if k.startswith("loss_level"))
    vicreg = "".join(f" {short} {record[key]:.4f}" for key, short in (("variance", "var"), ("covariance", "cov"))
                     if key in record)
    return (f"epoch {record['epoch']} step {record['step']} loss {record['loss']:.4f} [{levels}]{vicreg} "
            f"lr {record['lr']:.2e} {record['img_per_s']:.1f} img/s mem {record['peak_memory_gb']:.2f} GB "
            f"rank {record['effective_rank']:.1f}")


class Progress:
    def __init__(self, total, start, enabled=True, log=print, images_per_step=1):
        self.enabled, self.log = enabled, log
        self.images_per_step, self.rate, self.last = images_per_step, 0.0, None
        self.bar = None
        if enabled and sys.stdout.isatty():
            self.bar = RichProgress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task("train", total=total, completed=start, info="")

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()

    def update(self, step, epoch, loss, level_losses, lr):
        if not self.bar:
            return
        now = time.perf_counter()
        if self.last is not None:  # smoothed images per second
            rate = self.images_per_step / max(now - self.last, 1e-9)
            self.rate = rate if self.rate == 0 else 0.9 * self.rate + 0.1 * rate
        self.last = now
        mem = mx.get_peak_memory() / 2**30
        self.bar.update(self.task, completed=step,
                        info=f"epoch {epoch} loss {loss:.4f} [{' '.join(f'{v:.4f}' for v in level_losses)}] "
                             f"lr {lr:.2e} {self.rate:.1f} img/s mem {mem:.2f} GB")

    def describe(self, record):
        if not self.enabled:
            return
        if self.bar:
            self.bar.console.print(describe(record), highlight=False)
        else:
            self.log(describe(record))

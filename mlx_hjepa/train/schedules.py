"""Schedules as functions of the optimizer-step counter (an mx.array), evaluated inside the compiled step."""

import math
from dataclasses import dataclass

import mlx.core as mx

from .. import config as C


@dataclass(frozen=True)
class Schedules:
    lr: float
    warmup_lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int
    weight_decay: float
    weight_decay_end: float
    ema_start: float
    ema_end: float
    ema_steps: int
    lr_decay: str = "cosine"  # after warmup: cosine | linear | constant

    @classmethod
    def from_config(cls, cfg, steps_per_epoch, world_size=1):
        t, ema = cfg.training, cfg.model.target_encoder
        total = max(1, t.epochs * steps_per_epoch)
        lr = C.scaled_lr(cfg, world_size)
        min_lr = lr if t.lr_schedule == "constant" else lr * t.min_lr_ratio
        return cls(lr=lr, warmup_lr=lr * t.warmup_lr_ratio, min_lr=min_lr,
                   warmup_steps=int(round(t.warmup_epochs * steps_per_epoch)), total_steps=total,
                   weight_decay=t.weight_decay, weight_decay_end=t.weight_decay_end, ema_start=ema.ema_decay,
                   ema_end=ema.ema_end_decay, ema_steps=ema.ema_anneal_end_step or total, lr_decay=t.lr_schedule)

    def learning_rate(self, step):
        """Linear warmup warmup_lr -> lr over warmup_steps, then lr -> min_lr (cosine, linear or
        constant at lr) until total_steps."""
        step = step.astype(mx.float32)
        warm = max(self.warmup_steps, 1)
        warmup = self.warmup_lr + (self.lr - self.warmup_lr) * mx.minimum(step / warm, 1.0)
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        t = mx.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        if self.lr_decay == "cosine":
            decayed = self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + mx.cos(math.pi * t))
        elif self.lr_decay == "linear":
            decayed = self.lr + (self.min_lr - self.lr) * t
        else:
            decayed = mx.full(t.shape, self.lr)
        return mx.where(step < self.warmup_steps, warmup, decayed)

    def weight_decay_at(self, step):
        """Cosine weight_decay -> weight_decay_end over the whole run."""
        t = mx.clip(step.astype(mx.float32) / max(self.total_steps, 1), 0.0, 1.0)
        return self.weight_decay_end + 0.5 * (self.weight_decay - self.weight_decay_end) * (1.0 + mx.cos(math.pi * t))

    def ema_momentum(self, step):
        """Linear ema_start -> ema_end over ema_steps, then held."""
        t = mx.clip(step.astype(mx.float32) / max(self.ema_steps, 1), 0.0, 1.0)
        return self.ema_start + (self.ema_end - self.ema_start) * t

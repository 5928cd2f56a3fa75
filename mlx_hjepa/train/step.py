"""The compiled H-JEPA training step.

One `mx.compile`d function captures the model (context encoder, predictor, heads and the
frozen EMA target), the optimizer moments and step counter, and the random state. The
learning rate, weight decay and EMA momentum are computed from the step counter inside
the trace, so nothing schedule-related is frozen as a constant. On a multi-core CPU the batch
runs as two halves on two CPU streams, one core each (see _streams).
"""

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map, tree_map_with_path

from .. import _streams
from .. import config as C
from ..models import normalize_images
from ..objective import feature_std, hierarchical_loss, variance_covariance
from ..rules import LEVEL_TARGETS
from .optimizer import AdamW
from .schedules import Schedules


@dataclass(frozen=True)
class StepOptions:
    hierarchy_weights: tuple = (1.0, 0.5, 0.25)
    loss_type: str = "smooth_l1"
    normalize_embeddings: bool = False  # L2-normalise predictions and targets before the loss
    level_target: str = LEVEL_TARGETS[0]  # norm_of_mean
    variance_weight: float = 0.0  # VICReg variance term on pooled context features (0 = off)
    covariance_weight: float = 0.0
    clip_grad: float = 0.0  # global-norm clip; 0 = off
    accumulation_steps: int = 1
    bf16: bool = False  # bf16 compute, fp32 master weights
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8

    @classmethod
    def from_config(cls, cfg):
        t = cfg.training
        variance, covariance = C.vicreg_weights(cfg)
        return cls(hierarchy_weights=tuple(cfg.loss.hierarchy_weights), loss_type=cfg.loss.type,
                   normalize_embeddings=cfg.loss.normalize_embeddings, level_target=cfg.loss.level_target,
                   variance_weight=variance,
                   covariance_weight=covariance, clip_grad=t.clip_grad or 0.0, accumulation_steps=t.accumulation_steps,
                   bf16=t.use_amp, betas=tuple(t.betas))


def first_half_rows(batch_size):
    """Rows of a batch the default stream takes when the step splits it over two CPU streams.

    The halves differ in size on purpose from 8 rows up: MLX's compiler merges equivalent
    operations without looking at their streams, so with equal halves the two halves' broadcasts
    of the same constants to the same shapes become one array on one stream, and the other
    stream's fused kernels take it as a strided input (a slower loop, and a wait on the other
    stream). The default stream also runs the optimizer update after its half, so it takes the
    smaller one: 15 and 17 of 32."""
    if batch_size < 8:
        return batch_size // 2
    return batch_size // 2 - (1 if batch_size % 2 == 0 else 0)


def _cast(tree, dtype):
    return tree_map(lambda p: p.astype(dtype), tree)


class TrainStep:
    """`step(images, masks)` runs one micro-batch; the optimizer update happens every
    `accumulation_steps` calls. Returns a dict of metric arrays (unevaluated)."""

    def __init__(self, model, schedules: Schedules, options: StepOptions = StepOptions(), group=None,
                 side_stream="auto"):
        if len(options.hierarchy_weights) != model.num_hierarchies:
            raise ValueError(f"hierarchy_weights has {len(options.hierarchy_weights)} entries but the model has "
                             f"{model.num_hierarchies} levels; give one weight per level.")
        self.model, self.schedules, self.options = model, schedules, options
        self.group = group
        self.world_size = group.size() if group is not None else 1
        # the second half of each batch runs on this CPU stream (None: all on the default one); see
        # _streams. Not with several processes: when a peer dies, MLX fails the pending tasks of the
        # stream that ran the collective, and the other stream's wait on it may never be released.
        if side_stream == "auto":
            side_stream = _streams.side_stream() if self.world_size == 1 else None
        self.side_stream = side_stream
        self.optimizer = AdamW(model.trainable_parameters(), options.betas, options.eps)
        if options.accumulation_steps > 1:
            self.optimizer.state["grad_accum"] = tree_map(mx.zeros_like, model.trainable_parameters())
        self.micro_step = 0
        self.trace_count = 0  # how many times a step function was traced (one per new input shape)
        self.state = [model.state, self.optimizer.state, mx.random.state]
        compile_ = lambda f: mx.compile(f, inputs=self.state, outputs=self.state)
        self._fused = compile_(self._fused_step)
        self._accumulate = compile_(self._accumulate_step)
        self._apply = compile_(self._apply_step)

    # -- pieces (traced inside the compiled functions) --------------------------------
    def _loss(self, trainable, images, masks):
        model, opts = self.model, self.options
        dtype = mx.bfloat16 if opts.bf16 else mx.float32
        model.update(_cast(trainable, dtype) if opts.bf16 else trainable)
        x = normalize_images(images, dtype)

        target_params = model.target_encoder.parameters()
        if opts.bf16:
            model.target_encoder.update(_cast(target_params, dtype))
        target_tokens = mx.stop_gradient(model.target_encoder(x))
        if opts.bf16:
            model.target_encoder.update(target_params)

        context = model.encoder(x, masks["context"])
        predictions = model.predictor(context, masks["context"], masks["targets"])
        loss, per_level = hierarchical_loss(predictions, target_tokens, masks, model.heads, model.grid_size,
                                            opts.hierarchy_weights, opts.loss_type, opts.normalize_embeddings,
                                            opts.level_target)
        terms = {}  # VICReg's terms, unweighted, for the logs
        if opts.variance_weight or opts.covariance_weight:
            variance, covariance = variance_covariance(context.mean(axis=1))
            loss = loss + opts.variance_weight * variance + opts.covariance_weight * covariance
            terms = {"variance": variance.astype(mx.float32), "covariance": covariance.astype(mx.float32)}
        pooled_target = target_tokens.mean(axis=1).astype(mx.float32)
        return loss.astype(mx.float32), (mx.stack(per_level), pooled_target, terms)

    def splits_batch(self, batch_size):
        """Whether a batch of this size runs as two halves on two CPU streams (see _streams)."""
        vicreg = self.options.variance_weight or self.options.covariance_weight  # batch statistics
        return self.side_stream is not None and batch_size >= 2 and not vicreg

    def _value_and_grad(self, trainable, images, masks):
        B = images.shape[0]
        if not self.splits_batch(B):
            return mx.value_and_grad(self._loss)(trainable, images, masks)
        # Two halves, the second on the side stream (its backward follows it there): the loss is
        # the mean of per-image losses, so the batch's loss and gradient are the halves' averages
        # weighted by their sizes. Nothing crosses streams until the average.
        half, parts = first_half_rows(B), []
        default = mx.default_stream(mx.default_device())
        for lo, hi, stream in ((0, half, default), (half, B, self.side_stream)):
            with mx.stream(stream):
                parts.append(mx.value_and_grad(self._loss)(trainable, images[lo:hi],
                                                           {k: v[lo:hi] for k, v in masks.items()}))
        ((loss_a, (levels_a, pooled_a, _)), grads_a), ((loss_b, (levels_b, pooled_b, _)), grads_b) = parts
        wa, wb = half / B, (B - half) / B
        grads = tree_map(lambda a, b: wa * a + wb * b, grads_a, grads_b)
        aux = (wa * levels_a + wb * levels_b, mx.concatenate([pooled_a, pooled_b]), {})
        return (wa * loss_a + wb * loss_b, aux), grads

    def _grads(self, images, masks):
        self.trace_count += 1
        trainable = self.model.trainable_parameters()
        (loss, (per_level, pooled, terms)), grads = self._value_and_grad(trainable, images, masks)
        self.model.update(trainable)  # back to the fp32 masters after a bf16 forward
        if self.world_size > 1:
            # average_gradients rebuilds the tree from its leaves, dropping the frozen target
            # encoder's empty branch that the optimizer state mirrors: put the leaves back in place.
            averaged = dict(tree_flatten(nn.average_gradients(grads, group=self.group)))
            grads = tree_map_with_path(lambda path, _: averaged[path], grads)
            # the global batch's loss on every rank: logs match one process, and a NaN on any
            # rank stops all of them at the same step. The trailing 1 counts the ranks that
            # answered: a ring collective that loses a peer can return without an error.
            one = mx.ones(1, dtype=loss.dtype)
            names = sorted(terms)
            parts = [loss[None], per_level.astype(loss.dtype), *[terms[n][None] for n in names], one]
            summed = mx.distributed.all_sum(mx.concatenate(parts), group=self.group)
            levels = len(per_level)
            loss, per_level = summed[0] / self.world_size, summed[1:1 + levels] / self.world_size
            terms = {n: summed[1 + levels + i] / self.world_size for i, n in enumerate(names)}
            ranks_answered = summed[-1]
        else:
            ranks_answered = mx.array(1.0)
        metrics = {"loss": loss, "level_losses": per_level, "target_std": feature_std(pooled), "pooled": pooled,
                   "ranks_answered": ranks_answered, **terms}
        return grads, metrics

    def _update(self, grads):
        sched, step = self.schedules, self.optimizer.state["step"]
        lr, wd, momentum = sched.learning_rate(step), sched.weight_decay_at(step), sched.ema_momentum(step)
        if self.options.clip_grad > 0:
            grads, grad_norm = optim.clip_grad_norm(grads, self.options.clip_grad)
        else:
            grad_norm = mx.sqrt(sum((g * g).sum() for _, g in tree_flatten(grads)))
        new = self.optimizer.update(self.model.trainable_parameters(), grads, lr, wd)
        self.model.update(new)
        self.model.ema_update(momentum)
        return {"lr": lr, "weight_decay": wd, "ema_momentum": momentum, "grad_norm": grad_norm}

    def _fused_step(self, images, masks):
        grads, metrics = self._grads(images, masks)
        metrics.update(self._update(grads))
        return metrics

    def _accumulate_step(self, images, masks):
        grads, metrics = self._grads(images, masks)
        n = self.options.accumulation_steps
        self.optimizer.state["grad_accum"] = tree_map(lambda a, g: a + g / n,
                                                      self.optimizer.state["grad_accum"], grads)
        return metrics

    def _apply_step(self):
        self.trace_count += 1
        metrics = self._update(self.optimizer.state["grad_accum"])
        self.optimizer.state["grad_accum"] = tree_map(mx.zeros_like, self.optimizer.state["grad_accum"])
        return metrics

    # -- public ------------------------------------------------------------------------
    @property
    def step(self):
        """Optimizer updates done so far (a Python int; syncs)."""
        return int(self.optimizer.state["step"].item())

    def __call__(self, images, masks):
        images = mx.array(images) if not isinstance(images, mx.array) else images
        masks = {k: mx.array(v) for k, v in masks.items() if not k.endswith("_boxes")}
        if self.options.accumulation_steps == 1:
            return self._fused(images, masks)
        metrics = self._accumulate(images, masks)
        self.micro_step += 1
        if self.micro_step % self.options.accumulation_steps == 0:
            metrics.update(self._apply())
        return metrics

"""The training loop: data and masks -> compiled step -> logging, checkpoints, eval, export.

Host work for batch b+1 (decode, crop, masks) overlaps the device's step b: the step is
dispatched with `mx.async_eval` and its loss is read only after the next batch is ready.
"""

import json
import math
import os
import signal
import time
import warnings
from pathlib import Path

import mlx.core as mx
import numpy as np

from .. import config as C
from ..distributed import (PeerLostError, StallWatchdog, broadcast_from_rank0, broadcast_ints, check_peers,
                           peer_lost, shard_rows, stall_timeout_from_env)
from ..objective import effective_rank
from . import builders
from .checkpoint import (STATE_FILE, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint,
                         write_json_atomic)
from .progress import Progress
from .step import TrainStep
from .tensorboard import TensorBoardWriter

METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.json"  # world size and global batch of the launch


class TrainingError(RuntimeError):
    """Stops a run with one sentence for the user (the CLI prints it without a traceback)."""


class Stopped(KeyboardInterrupt):
    """SIGTERM / Ctrl-C: checkpoint where we are, then leave."""


def run_dir_of(cfg):
    return Path(cfg.experiment.output_dir) / cfg.experiment.name


def select_device(cfg):
    if cfg.device == "cpu":
        mx.set_default_device(mx.cpu)
    elif cfg.device == "gpu":
        if not mx.is_available(mx.gpu):
            raise TrainingError("device is 'gpu' (mps/cuda) but this MLX build has no GPU backend; "
                                "set device: cpu or auto.")
        mx.set_default_device(mx.gpu)
    if cfg.training.use_amp and mx.default_device() == mx.cpu:
        warnings.warn("training.use_amp (bf16) on MLX's CPU backend is 6-9x slower than fp32; "
                      "set training.use_amp: false for CPU runs.", stacklevel=2)


class Trainer:
    def __init__(self, cfg, run_dir=None, resume=False, stop_at_step=None, log=print, world=None):
        self.cfg, self.log, self.stop_at_step = cfg, log, stop_at_step
        self.group = world
        self.world_size = world.size() if world is not None else 1
        self.rank = world.rank() if world is not None else 0
        self.is_main = self.rank == 0
        if not self.is_main:  # rank 0 speaks for the run; errors still reach every rank's stderr
            self.log = lambda *args, **kwargs: None
        self.run_dir = Path(run_dir) if run_dir else run_dir_of(cfg)
        self.ckpt_dir = self.run_dir / "checkpoints"
        # Only rank 0 reads the run directory (the others may be on hosts without it); the
        # others get its weights, optimizer state and position in _sync_ranks.
        self.resume_from = latest_checkpoint(self.ckpt_dir) if self.is_main and self.ckpt_dir.is_dir() else None
        if self.resume_from is not None and not resume:
            raise TrainingError(f"{self.run_dir} already holds a run; pass --resume auto to continue it, or set "
                                "experiment.name (or --output-dir) for a new one.")
        select_device(cfg)

        self.model = builders.build_model(cfg)
        self.sampler = builders.build_mask_sampler(cfg, self.model)
        self.dataset = builders.build_train_dataset(cfg)
        from ..data import build_dataloader

        self.loader = build_dataloader(self.dataset, cfg.data.batch_size, num_workers=cfg.data.num_workers,
                                       shuffle=True, drop_last=True, seed=cfg.experiment.seed,
                                       world_size=self.world_size, rank=self.rank)
        A = cfg.training.accumulation_steps
        self.steps_per_epoch = len(self.loader) // A
        if self.steps_per_epoch == 0:
            raise TrainingError(f"one epoch has {len(self.loader)} batches, fewer than training.accumulation_steps "
                                f"({A}); lower accumulation_steps or data.batch_size.")
        self.batches_per_epoch = self.steps_per_epoch * A
        self.total_steps = cfg.training.epochs * self.steps_per_epoch
        self.schedules = builders.build_schedules(cfg, self.steps_per_epoch, self.world_size)
        self.step = TrainStep(self.model, self.schedules, builders.build_step_options(cfg), group=world)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.epoch, self.batch_in_epoch, self.global_step = 0, 0, 0
        self.eval_history = []
        self.tensorboard = None
        self._pending = None  # (metrics, batch, completes an update) of the step dispatched last
        self._stop_signal = None  # set by SIGTERM in a single-process run
        self.watchdog = StallWatchdog(stall_timeout_from_env(), self.rank, self.world_size) if world else None

    # -- bookkeeping --------------------------------------------------------------------
    def _trainer_state(self):
        return {"epoch": self.epoch, "batch": self.batch_in_epoch, "step": self.global_step,
                "world_size": self.world_size, "global_batch": self.global_batch,
                "eval_history": self.eval_history}

    @property
    def global_batch(self):
        return self.cfg.data.batch_size * self.cfg.training.accumulation_steps * self.world_size

    def _checkpoint_name(self):
        return f"step_{self.global_step:08d}"

    def save(self):
        if self.group is not None:  # every rank calls save at the same point of the run
            # a collective that failed when a rank died can leave wrong values without raising:
            # write weights only once every rank has answered after computing them
            mx.eval(self.model.parameters(), self.step.optimizer.state)
            check_peers(self.group)
        if not self.is_main:
            return None
        folder = save_checkpoint(self.ckpt_dir, self._checkpoint_name(), self.model, self.step.optimizer.state,
                                 self._trainer_state())
        self._prune()
        return folder

    def _prune(self):
        """Keep the latest checkpoint and the last keep_last_k taken at save_frequency epochs."""
        keep = {self._checkpoint_name()}
        every, k = self.cfg.checkpoint.save_frequency, self.cfg.checkpoint.keep_last_k
        periodic = sorted(s * self.steps_per_epoch for s in range(every, self.cfg.training.epochs + 1, every)
                          if s * self.steps_per_epoch <= self.global_step)
        keep |= {f"step_{s:08d}" for s in periodic[-k:]} if k > 0 else set()
        prune_checkpoints(self.ckpt_dir, keep)

    def _restore(self):
        state = load_checkpoint(self.resume_from, self.model, self.step.optimizer)
        self.epoch, self.batch_in_epoch, self.global_step = state["epoch"], state["batch"], state["step"]
        self.eval_history = state.get("eval_history", [])
        self.step.micro_step = self.batch_in_epoch
        self._truncate_metrics(self.global_step)
        self.log(f"resumed from {self.resume_from} (epoch {self.epoch}, step {self.global_step})")

    def _truncate_metrics(self, step):
        """Drop lines logged after the checkpoint: they will be logged again, identically."""
        if not self.metrics_path.is_file():
            return
        kept = [line for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        tmp = self.metrics_path.with_name(f".{METRICS_FILE}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.metrics_path)

    def _write_metrics(self, record):
        if self.is_main:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.tensorboard is not None:
                self.tensorboard.scalars(record["step"], record)

    # -- run ----------------------------------------------------------------------------
    def prepare_run_dir(self):
        if not self.is_main:
            return
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / ".config.yaml.tmp"
        tmp.write_text(C.config_to_yaml(self.cfg))  # world size and global batch go to run.json
        os.replace(tmp, self.run_dir / "config.yaml")
        # The launch, kept out of config.yaml (which holds only what a config may set): the
        # world size comes from mlx.launch, not from the config.
        write_json_atomic(self.run_dir / RUN_FILE, {
            "world_size": self.world_size, "global_batch": self.global_batch,
            "batch_size_per_process": self.cfg.data.batch_size,
            "accumulation_steps": self.cfg.training.accumulation_steps,
            "peak_lr": C.scaled_lr(self.cfg, self.world_size), "lr_scaling": self.cfg.training.lr_scaling,
            "mlx": mx.__version__})
        if self.cfg.logging.use_tensorboard:
            self.tensorboard = TensorBoardWriter(self.run_dir / "tensorboard")

    def _check_world_size(self):
        """Before anything is written: a checkpoint only continues with the world size that wrote it."""
        saved = json.loads((self.resume_from / STATE_FILE).read_text()).get("world_size", 1)
        if saved != self.world_size:
            how = "without mlx.launch" if saved == 1 else f"under mlx.launch with {saved} processes"
            raise TrainingError(f"{self.resume_from} was written by {saved} process(es) and this run has "
                                f"{self.world_size}; resume it {how}, so the data order and global batch stay the "
                                "same (or start a new run with another experiment.name).")

    def _sync_ranks(self):
        """Every rank continues from rank 0's weights, optimizer state and position in the data."""
        if self.group is None:
            return
        self.model.update(broadcast_from_rank0(self.model.parameters(), self.group))
        self.step.optimizer.state.update(broadcast_from_rank0(self.step.optimizer.state, self.group))
        position = broadcast_ints([self.epoch, self.batch_in_epoch, self.global_step], self.group)
        self.epoch, self.batch_in_epoch, self.global_step = position
        self.step.micro_step = self.batch_in_epoch

    def _last_checkpoint_text(self):
        if not self.is_main:
            return "checkpoints are on rank 0"
        last = latest_checkpoint(self.ckpt_dir) if self.ckpt_dir.is_dir() else None
        return f"the last checkpoint is {last}" if last else "no checkpoint was written yet"

    def _peer_lost_error(self):
        where = self._last_checkpoint_text()
        return TrainingError(f"rank {self.rank} of {self.world_size} lost the connection to another process of this "
                             f"run near step {self.global_step + 1} (a rank crashed, was stopped, or its host became "
                             f"unreachable: see the other ranks' output); {where}: fix the cause and rerun the same "
                             "mlx.launch command with --resume auto.")

    def fit(self):
        if self.resume_from is not None:
            self._check_world_size()
        self.prepare_run_dir()
        try:
            return self._fit()
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()

    def _fit(self):
        if self.resume_from is not None:
            self._restore()
        self._sync_ranks()
        self.log(f"run directory: {self.run_dir}")
        self.log(f"{self.dataset.samples_per_epoch} images per epoch, {self.steps_per_epoch} steps/epoch x {self.cfg.training.epochs} "
                 f"epochs, batch {self.cfg.data.batch_size} per process x {self.world_size} process(es) x "
                 f"{self.cfg.training.accumulation_steps} accumulation = global batch {self.global_batch}")
        # One process: SIGTERM asks for a stop at the next step boundary (checkpoint, then exit 1).
        # Several: the launcher's SIGTERM means a rank failed, and it interrupts at once (below).
        handler = self._request_stop if self.world_size == 1 else _raise_stopped
        previous = signal.signal(signal.SIGTERM, handler) if self.is_main else None
        progress = Progress(self.total_steps, self.global_step, enabled=self.is_main, log=self.log,
                            images_per_step=self.global_batch)
        try:
            with progress:
                finished = self._train(progress)
        except (Stopped, KeyboardInterrupt) as stop:
            if self.world_size > 1:
                # The step in flight may have lost a rank, and a collective that fails that way can
                # leave wrong values without an error: keep the last checkpoint, write no doubtful one.
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                previous = None
                why = "SIGTERM (mlx.launch sends it to every rank when one fails: see its warnings)" \
                    if isinstance(stop, Stopped) else "Ctrl-C"
                raise TrainingError(f"rank {self.rank} stopped near step {self.global_step + 1} by {why}; with "
                                    f"several processes a stop writes no checkpoint; {self._last_checkpoint_text()}"
                                    ": continue with --resume auto.") from None
            if not self._settle_pending():
                raise TrainingError(f"stopped at step {self.global_step + 1}, whose loss was not finite; "
                                    f"{self._last_checkpoint_text()} stays intact.") from None
            folder = self.save()
            raise TrainingError(f"stopped at step {self.global_step}; checkpoint {folder}; continue with "
                                "--resume auto.") from None
        except RuntimeError as err:
            # first thing: mlx.launch is about to SIGTERM this rank too, which must not cut the report short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            previous = None
            if not peer_lost(err):
                raise
            raise self._peer_lost_error() from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if self.watchdog is not None:
                self.watchdog.pause()
        if not finished and self._stop_signal is not None:
            folder = self.save()
            raise TrainingError(f"stopped by {signal.Signals(self._stop_signal).name} at step {self.global_step}; "
                                f"checkpoint {folder}; continue with --resume auto.")
        if not finished:
            folder = self.save()
            self.log(f"stopped at step {self.global_step} (--stop-at-step); checkpoint {folder}; "
                     "continue with --resume auto")
            return {"finished": False, "step": self.global_step, "checkpoint": str(folder)}
        return self._finish()

    def _train(self, progress):
        cfg = self.cfg
        B, A = cfg.data.batch_size, cfg.training.accumulation_steps
        log_every = cfg.logging.log_frequency
        window = Window(self.dataset_names(), self.world_size)
        while self.epoch < cfg.training.epochs:
            batches = self.loader.epoch_iter(self.epoch, self.batch_in_epoch)
            t_wait = time.perf_counter()
            try:
                for b in range(self.batch_in_epoch, self.batches_per_epoch):
                    batch = next(batches)
                    # every rank draws the global batch's masks and keeps its own rows (see shard_rows)
                    masks = shard_rows(self.sampler(B * self.world_size, self.epoch, b), self.world_size, self.rank)
                    window.data_wait += time.perf_counter() - t_wait
                    if self._pending is not None:
                        self._finish_micro_step(*self._pending, window, progress, log_every)
                        self._pending = None
                        if self._should_stop():
                            return False
                    out = self.step(batch["image"], masks)
                    mx.async_eval(out)
                    # From here the model holds this step's update: a stop must count it (_settle_pending).
                    self._pending = (out, batch, (b + 1) % A == 0)
                    self.batch_in_epoch = b + 1
                    t_wait = time.perf_counter()
                if self._pending is not None:
                    self._finish_micro_step(*self._pending, window, progress, log_every)
                    self._pending = None
            finally:
                batches.close()
            if self._should_stop():
                return False
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self.save()
            if self.watchdog is not None:  # rank 0 writes and evaluates while the others wait
                self.watchdog.pause()
            if cfg.evaluation.eval_frequency > 0 and self.epoch % cfg.evaluation.eval_frequency == 0 \
                    and self.epoch < cfg.training.epochs:
                self._evaluate(progress)
        return True

    def _settle_pending(self):
        """After a stop signal: count the step already dispatched (the model holds its update).
        False if that step's loss is not finite, so nothing may be saved."""
        pending, self._pending = self._pending, None
        if pending is None:
            return True
        out, _, completes_update = pending
        if not math.isfinite(out["loss"].item()):
            return False
        self.global_step += int(completes_update)
        return True

    def _request_stop(self, signum, frame):
        self._stop_signal = signum

    def _should_stop(self):
        asked = self._stop_signal is not None or (self.stop_at_step is not None and self.global_step >= self.stop_at_step)
        return asked and self.batch_in_epoch % self.cfg.training.accumulation_steps == 0

    def _finish_micro_step(self, out, batch, completes_update, window, progress, log_every):
        loss = out["loss"].item()
        if self.group is not None and out["ranks_answered"].item() != self.world_size:
            raise PeerLostError(f"{out['ranks_answered'].item():g} of {self.world_size} ranks answered")
        if not math.isfinite(loss):
            last = latest_checkpoint(self.ckpt_dir) if self.ckpt_dir.is_dir() else None
            where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
            raise TrainingError(f"loss became {loss} at step {self.global_step + 1} (epoch {self.epoch}); {where} "
                                "and stays intact: lower training.lr or set training.clip_grad, then --resume auto.")
        window.add(out, loss, batch)
        if self.watchdog is not None:
            self.watchdog.kick(self.global_step + completes_update)
        if not completes_update:
            return
        self.global_step += 1
        progress.update(self.global_step, self.epoch, loss, window.level_losses[-1], out["lr"].item())
        if self.global_step % log_every == 0 or self.global_step == self.total_steps:
            record = window.record(self.global_step, self.epoch, out, self.cfg.logging.log_dataset_distribution)
            record["step_traces"] = self.step.trace_count  # compiled-step traces so far: one per new mask shape
            self._write_metrics(record)
            progress.describe(record)
            window.reset()

    def dataset_names(self):
        return getattr(self.dataset, "names", [self.dataset.name])

    # -- eval and export -----------------------------------------------------------------
    def _knn(self, encoder):
        from ..eval import evaluate_knn

        train, val = builders.build_eval_datasets(self.cfg)
        return evaluate_knn(encoder, train, val, k=self.cfg.evaluation.knn_k)

    def _evaluate(self, progress=None):
        if not self.is_main:
            return None
        try:
            result = self._knn(self.model.target_encoder)
        except (FileNotFoundError, ValueError) as err:
            self.log(f"k-NN evaluation skipped: {err}")
            return None
        record = {"step": self.global_step, "epoch": self.epoch, "knn_top1": result["top1"],
                  "knn_top5": result["top5"], "knn_k": self.cfg.evaluation.knn_k}
        self.eval_history.append(record)
        self._write_metrics(record)
        self.log(f"epoch {self.epoch}: k-NN top-1 {result['top1']:.2%} (top-5 {result['top5']:.2%})")
        return record

    def _finish(self):
        summary = {"finished": True, "step": self.global_step, "run_dir": str(self.run_dir)}
        if not self.is_main:
            return summary
        from ..export import save_encoder

        encoder_path = save_encoder(self.model.target_encoder, self.run_dir / "encoder.safetensors",
                                    training_config=C.config_to_dict(self.cfg))
        summary["encoder"] = str(encoder_path)
        self.log(f"exported target encoder: {encoder_path}")
        if self.cfg.evaluation.eval_frequency > 0:
            final = self._evaluate()
            if final is not None:
                from ..eval.baselines import pixel_knn

                random_init = self._knn(builders.build_model(self.cfg).target_encoder)
                raw_pixels = pixel_knn(*builders.build_eval_datasets(self.cfg), self.cfg.data.image_size,
                                       k=self.cfg.evaluation.knn_k)
                final.update(random_init_knn_top1=random_init["top1"], raw_pixels_knn_top1=raw_pixels["top1"])
                self._write_metrics({"step": self.global_step, "event": "final", **final})
                summary.update(knn_top1=final["knn_top1"], random_init_knn_top1=random_init["top1"],
                               raw_pixels_knn_top1=raw_pixels["top1"])
                self.log(f"k-NN top-1: trained {final['knn_top1']:.2%} vs random init {random_init['top1']:.2%} "
                         f"vs raw pixels {raw_pixels['top1']:.2%}")
                with open(self.run_dir / "eval_knn.json", "w") as f:
                    json.dump({"trained": final, "random_init": random_init, "raw_pixels": raw_pixels}, f, indent=2,
                              default=float)
        return summary


def _raise_stopped(signum, frame):
    raise Stopped()


class Window:
    """Running sums between two log lines."""

    def __init__(self, names, world_size=1):
        self.names, self.world_size = names, world_size  # img/s counts every rank's images
        self.reset()

    def reset(self):
        self.start = time.perf_counter()
        self.images, self.losses, self.level_losses, self.data_wait = 0, [], [], 0.0
        self.mix = np.zeros(len(self.names), dtype=np.int64)

    def add(self, out, loss, batch):
        self.images += len(batch["image"]) * self.world_size
        self.losses.append(loss)
        self.level_losses.append(np.array(out["level_losses"]))
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
        if with_mix:
            rec["dataset_mix"] = {n: int(c) for n, c in zip(self.names, self.mix)}
        return rec

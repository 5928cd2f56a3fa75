"""The training loop: data and masks -> compiled step -> metrics, checkpoints, in-run eval, export.

Host work for batch b+1 (decode, crop, masks) overlaps the device's step b: the step is
dispatched with `mx.async_eval` and its loss is read only after the next batch is ready.
What is logged, where, when the run stops early and what it evaluates belong to the
collaborators (metrics.py, stops.py, inrun_eval.py, progress.py); the run directory's
layout belongs to RunDir.
"""

import math
import time

import mlx.core as mx

from .. import config as C
from ..data import build_train_loader
from ..distributed import PeerLostError, StallWatchdog, check_peers, peer_lost, shard_rows, stall_timeout_from_env
from ..masks import MultiBlockMaskSampler
from ..models import HJEPA
from ..rundir import RunDir
from ..viz import image_logger
from ..weights import save_encoder
from . import resume
from .inrun_eval import InRunEval
from .metrics import MetricsLog, Window, mix_weights
from .progress import Progress
from .schedules import Schedules
from .step import StepOptions, TrainStep
from .stops import StopPolicy, TrainingError, peer_lost_error, stopped_by_interrupt, stopped_early


class Trainer:
    def __init__(self, cfg, run_dir=None, resume=False, stop_at_step=None, log=print, world=None):
        self.cfg, self.group, self.resume = cfg, world, resume
        self.world_size, self.rank = (world.size(), world.rank()) if world is not None else (1, 0)
        self.is_main = self.rank == 0
        self.log = log if self.is_main else (lambda *args, **kwargs: None)  # rank 0 speaks for the run
        self.run = RunDir(run_dir or C.run_dir_of(cfg))
        # Only rank 0 reads the run directory, in fit() under its lock (the others may be on hosts
        # without it); the others get its weights, optimizer state and position in resume.sync_ranks.
        self.resume_from = None
        self.model = HJEPA.from_config(C.model_config(cfg), seed=cfg.experiment.seed)
        self.sampler = MultiBlockMaskSampler.from_config(cfg.masking, self.model.grid_size,
                                                         cfg.model.num_hierarchies, cfg.experiment.seed)
        self.dataset, self.loader = build_train_loader(cfg, self.world_size, self.rank)
        A = cfg.training.accumulation_steps
        self.steps_per_epoch = len(self.loader) // A
        if self.steps_per_epoch == 0:
            raise TrainingError(f"one epoch has {len(self.loader)} batches, fewer than training.accumulation_steps "
                                f"({A}); lower accumulation_steps or data.batch_size.")
        self.batches_per_epoch = self.steps_per_epoch * A
        self.total_steps = cfg.training.epochs * self.steps_per_epoch
        schedules = Schedules.from_config(cfg, self.steps_per_epoch, self.world_size)
        self.step = TrainStep(self.model, schedules, StepOptions.from_config(cfg), group=world)
        self.epoch, self.batch_in_epoch, self.global_step = 0, 0, 0
        self.stops = StopPolicy(self.world_size, stop_at_step, A, enabled=self.is_main)
        self.metrics = self.evaluation = self.images = None  # made in fit(), once the run directory is ours
        self._pending = None  # (metrics, batch, completes an update) of the step dispatched last
        self.watchdog = StallWatchdog(stall_timeout_from_env(), self.rank, self.world_size) if world else None

    @property
    def global_batch(self):
        return C.global_batch(self.cfg, self.world_size)

    # -- checkpoints --------------------------------------------------------------------
    def save(self):
        if self.group is not None:  # every rank calls save at the same point of the run
            # a collective that failed when a rank died can leave wrong values without raising:
            # write weights only once every rank has answered after computing them
            mx.eval(self.model.parameters(), self.step.optimizer.state)
            check_peers(self.group)
        if not self.is_main:
            return None
        state = {"epoch": self.epoch, "batch": self.batch_in_epoch, "step": self.global_step,
                 "world_size": self.world_size, "global_batch": self.global_batch,
                 "eval_history": self.evaluation.history}
        folder = self.run.save_checkpoint(self.global_step, self.model, self.step.optimizer.state, state)
        self.run.prune(C.checkpoints_to_keep(self.cfg, self.steps_per_epoch, self.global_step))
        return folder

    def _where(self, last_is="the last checkpoint"):
        return self.run.describe_latest(last_is) if self.is_main else "checkpoints are on rank 0"

    # -- run ----------------------------------------------------------------------------
    def fit(self):
        if self.is_main:
            self.run.lock()
        try:
            self._begin()
            return self._fit()
        finally:
            if self.metrics is not None:
                self.metrics.close()
            self.run.unlock()

    def _begin(self):
        if self.is_main:  # under the lock no other process writes: look at the latest checkpoint again
            self.resume_from = self.run.latest_checkpoint()
            if self.resume_from is not None and not self.resume:
                raise TrainingError(f"{self.run.path} already holds a run; pass --resume auto to continue it, or "
                                    "set experiment.name (or --output-dir) for a new one.")
        if self.resume_from is not None:
            resume.check_world_size(self.resume_from, self.world_size)
        if self.is_main:
            launch = C.launch_info(self.cfg, self.world_size) | {"activation": self.model.encoder.act,
                                                                 "mlx": mx.__version__}  # what "auto" became
            self.run.begin(C.config_to_yaml(self.cfg), launch, fresh=self.resume_from is None)
        self.metrics = MetricsLog(self.run, self.is_main, self.cfg.logging.use_tensorboard,
                                  self.cfg.logging.log_dataset_distribution)
        self.evaluation = InRunEval(self.cfg, self.metrics, self.log, enabled=self.is_main)
        if self.is_main:  # logging.log_images / log_attention: None when both are off
            self.images = image_logger(self.cfg, self.run.path, self.dataset, self.sampler, self.metrics.tensorboard)

    def _fit(self):
        if self.resume_from is not None:
            self.evaluation.history = resume.restore(self).get("eval_history", [])
        resume.sync_ranks(self)
        self.log(f"run directory: {self.run.path}")
        self.log(f"{self.dataset.samples_per_epoch} images per epoch, {self.steps_per_epoch} steps/epoch x "
                 f"{self.cfg.training.epochs} epochs; {C.describe_batch(self.cfg, self.world_size)}")
        progress = Progress(self.total_steps, self.global_step, enabled=self.is_main, log=self.log,
                            images_per_step=self.global_batch)
        self.stops.install()
        try:
            with progress:
                finished = self._train(progress)
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM with several processes (stops.Stopped)
            stopped_by_interrupt(self, stop)
        except RuntimeError as err:
            self.stops.ignore_sigterm()  # first: mlx.launch is about to SIGTERM this rank too
            if not peer_lost(err):
                raise
            raise peer_lost_error(self.rank, self.world_size, self.global_step + 1, self._where()) from None
        finally:
            self.stops.restore()
            if self.watchdog is not None:
                self.watchdog.pause()
        return self._finish() if finished else stopped_early(self)

    def _train(self, progress):
        cfg, B = self.cfg, self.cfg.data.batch_size
        window = Window(getattr(self.dataset, "names", [self.dataset.name]), self.world_size, mix_weights(self.dataset))
        while self.epoch < cfg.training.epochs:
            batches = self.loader.epoch_iter(self.epoch, self.batch_in_epoch)
            t_wait = time.perf_counter()
            try:
                for b in range(self.batch_in_epoch, self.batches_per_epoch):
                    batch = next(batches)
                    # every rank draws the global batch's masks and keeps its own rows (see shard_rows)
                    masks = shard_rows(self.sampler(B * self.world_size, self.epoch, b), self.world_size, self.rank)
                    window.data_wait += time.perf_counter() - t_wait
                    if self._finish_pending(window, progress):
                        return False
                    out = self.step(batch["image"], masks)
                    mx.async_eval(out)
                    # From here the model holds this step's update: a stop must count it (stops.settle_pending).
                    self._pending = (out, batch, (b + 1) % cfg.training.accumulation_steps == 0)
                    self.batch_in_epoch = b + 1
                    t_wait = time.perf_counter()
                self._finish_pending(window, progress)
            finally:
                batches.close()
            if self.stops.should_stop(self.global_step, self.batch_in_epoch):
                return False
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self.save()
            if self.watchdog is not None:  # rank 0 writes and evaluates while the others wait
                self.watchdog.pause()
            if self.images is not None:  # between epochs; its time is left out of img/s
                window.start += self.images(self.epoch, self.global_step, self.model)
            if self.evaluation.due(self.epoch):
                self.evaluation.evaluate(self.model, self.global_step, self.epoch)
        return True

    def _finish_pending(self, window, progress):
        """Read the step dispatched last; True when the run should stop after it."""
        if self._pending is None:
            return False
        out, batch, completes_update = self._pending
        self._pending = None
        loss = out["loss"].item()
        if self.group is not None and out["ranks_answered"].item() != self.world_size:
            raise PeerLostError(f"{out['ranks_answered'].item():g} of {self.world_size} ranks answered")
        if not math.isfinite(loss):
            raise TrainingError(f"loss became {loss} at step {self.global_step + 1} (epoch {self.epoch}); "
                                f"{self._where('the last good checkpoint')} and stays intact: lower training.lr or set training.clip_grad, then --resume auto.")
        window.add(out, loss, batch)
        if self.watchdog is not None:
            self.watchdog.kick(self.global_step + completes_update)
        if completes_update:
            self.global_step += 1
            progress.update(self.global_step, self.epoch, loss, window.level_losses[-1], out["lr"].item())
            if self.global_step % self.cfg.logging.log_frequency == 0 or self.global_step == self.total_steps:
                # step_traces: compiled-step traces so far, one per new mask shape
                record = self.metrics.flush(window, self.global_step, self.epoch, out, step_traces=self.step.trace_count)
                progress.describe(record)
        return self.stops.should_stop(self.global_step, self.batch_in_epoch)

    def _finish(self):
        summary = {"finished": True, "step": self.global_step, "run_dir": str(self.run.path)}
        if not self.is_main:
            return summary
        encoder_path = save_encoder(self.model.target_encoder, self.run.encoder_file,
                                    training_config=C.config_to_dict(self.cfg))
        summary["encoder"] = str(encoder_path)
        self.log(f"exported target encoder: {encoder_path}")
        summary.update(self.evaluation.final(self.model, self.global_step, self.epoch, self.run))
        self.log(f"report: python -m mlx_hjepa.report {self.run.path}")
        return summary

"""How a run stops early, and the one-sentence errors it stops with.

One process: SIGTERM asks for a stop at the next step boundary (checkpoint, then exit 1), and
--stop-at-step N stops once the run reaches optimizer step N. Several processes: the launcher's
SIGTERM means a rank failed, and it interrupts at once (no checkpoint of doubtful values).
"""

import math
import signal


class TrainingError(RuntimeError):
    """Stops a run with one sentence for the user (the CLI prints it without a traceback)."""


class Stopped(KeyboardInterrupt):
    """SIGTERM / Ctrl-C: checkpoint where we are, then leave."""


def _raise_stopped(signum, frame):
    raise Stopped()


class StopPolicy:
    def __init__(self, world_size, stop_at_step, accumulation_steps, enabled=True):
        self.world_size, self.stop_at_step, self.accumulation_steps = world_size, stop_at_step, accumulation_steps
        self.enabled = enabled  # rank 0 handles signals
        self.signal = None  # set by SIGTERM in a single-process run
        self._previous = self._previous_int = None

    def install(self):
        if self.enabled:
            handler = self._request if self.world_size == 1 else _raise_stopped
            self._previous = signal.signal(signal.SIGTERM, handler)
            self._previous_int = signal.signal(signal.SIGINT, self._interrupt_once)

    def ignore_sigterm(self):
        """From now on SIGTERM cannot cut short what this rank is reporting (mlx.launch sends it to every rank)."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self._previous = None

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
        if self._previous_int is not None:
            signal.signal(signal.SIGINT, self._previous_int)
            self._previous_int = None

    def _request(self, signum, frame):
        self.signal = signum

    def _interrupt_once(self, signum, frame):
        """Ctrl-C stops at once (and checkpoints, in one process). Further Ctrl-Cs wait until that
        is done, so they cannot cut into the save or the data loader's clean-up with a second
        traceback; and should the interrupt land in a finaliser that swallows it, the run still
        stops at the next step boundary."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the process exits: it is on its way out
        self._previous_int = None
        if self.world_size == 1:
            self.signal = signum
        raise KeyboardInterrupt

    def should_stop(self, global_step, batch_in_epoch):
        """A stop is due and the run sits at an optimizer-step boundary."""
        asked = self.signal is not None or (self.stop_at_step is not None and global_step >= self.stop_at_step)
        return asked and batch_in_epoch % self.accumulation_steps == 0

    @property
    def signal_name(self):
        return signal.Signals(self.signal).name if self.signal is not None else None


def stopped_early(trainer):
    """The loop returned before the last epoch (SIGTERM in one process, or --stop-at-step): checkpoint,
    then say how to continue."""
    folder = trainer.save()
    if trainer.stops.signal is not None:
        raise TrainingError(f"stopped by {trainer.stops.signal_name} at step {trainer.global_step}; checkpoint "
                            f"{folder}; continue with --resume auto.")
    trainer.log(f"stopped at step {trainer.global_step} (--stop-at-step); checkpoint {folder}; continue with "
                "--resume auto")
    return {"finished": False, "step": trainer.global_step, "checkpoint": str(folder)}


def settle_pending(trainer):
    """After an interrupt: count the step already dispatched (the model holds its update). False if
    that step's loss is not finite, so nothing may be saved."""
    pending, trainer._pending = trainer._pending, None
    if pending is None:
        return True
    out, _, completes_update = pending
    if not math.isfinite(out["loss"].item()):
        return False
    trainer.global_step += int(completes_update)
    return True


def stopped_by_interrupt(trainer, stop):
    """Ctrl-C (or, with several processes, the launcher's SIGTERM) cut the loop short: raise the
    sentence for the user, after checkpointing where that is safe."""
    if trainer.world_size > 1:
        # The step in flight may have lost a rank, and a collective that fails that way can
        # leave wrong values without an error: keep the last checkpoint, write no doubtful one.
        trainer.stops.ignore_sigterm()
        raise interrupted_error(stop, trainer.rank, trainer.global_step + 1, trainer._where()) from None
    if not settle_pending(trainer):
        raise TrainingError(f"stopped at step {trainer.global_step + 1}, whose loss was not finite; "
                            f"{trainer._where()} stays intact.") from None
    folder = trainer.save()
    raise TrainingError(f"stopped at step {trainer.global_step}; checkpoint {folder}; continue with --resume auto.") \
        from None


def interrupted_error(stop, rank, next_step, where):
    """Several processes: a stop writes no checkpoint (the step in flight may have lost a rank)."""
    why = "SIGTERM (mlx.launch sends it to every rank when one fails: see its warnings)" \
        if isinstance(stop, Stopped) else "Ctrl-C"
    return TrainingError(f"rank {rank} stopped near step {next_step} by {why}; with several processes a stop "
                         f"writes no checkpoint; {where}: continue with --resume auto.")


def peer_lost_error(rank, world_size, next_step, where):
    return TrainingError(f"rank {rank} of {world_size} lost the connection to another process of this run near step "
                         f"{next_step} (a rank crashed, was stopped, or its host became unreachable: see the other "
                         f"ranks' output); {where}: fix the cause and rerun the same mlx.launch command with "
                         "--resume auto.")

"""How a run stops early, and the one-sentence errors it stops with.

One process: SIGTERM asks for a stop at the next step boundary (checkpoint, then exit 1), and
--stop-at-step N stops once the run reaches optimizer step N. Several processes: the launcher's
SIGTERM means a rank failed, and it interrupts at once (no checkpoint of doubtful values).
"""

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

"""mx.distributed helpers for data-parallel training launched with `mlx.launch`.

The launcher starts one process per rank and sets up the group (ring over TCP or
Thunderbolt, MPI, ...). Every rank builds the same model from the same seed, reads its
own shard of each epoch and takes its rows of the global batch's masks; the step
averages gradients over the group, so all ranks stay bit-identical. Only rank 0 writes.

When a rank dies its sockets close and the others' next collective fails with
"[ring] connection to a peer was lost" (mlx 0.32); `peer_lost` recognises that so the
trainer can stop with one sentence instead of a traceback, and `mlx.launch` then
terminates the remaining ranks. Other collectives in flight at that moment may return
only this rank's data without any error, so nothing is checkpointed before `check_peers`
confirms that every rank answered. A peer that stays connected but never answers (a host
that slept or dropped off the network) makes the others wait in the collective forever,
deaf to Ctrl-C and SIGTERM, since the ring backend has no timeout: `StallWatchdog` ends
such a rank from a thread (the wait releases the GIL).
"""

import os
import sys
import threading
import time

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_map_with_path

# Phrases with which MLX's backends report a collective whose peer has gone away.
PEER_LOST_PHRASES = ("connection to a peer was lost", "closed by the peer", "Receiving from socket",
                     "Sending to socket", "MPI_ERR", "NCCL error")


def init_distributed():
    """The launcher's group (mlx.launch sets it up), or None for a plain single-process run."""
    group = mx.distributed.init()
    return group if group.size() > 1 else None


def shard_rows(arrays, world_size, rank):
    """This rank's rows of global-batch arrays: rows rank, rank + W, rank + 2W, ...

    The loader gives rank r the global positions r, r + W, r + 2W, ... of the epoch, so
    row i of rank r's batch is row i * W + r of the global batch; drawing the global
    batch's masks on every rank and keeping these rows makes W ranks x batch B see
    exactly what one process with batch W * B sees (and the same context length Kc).
    """
    if world_size == 1:
        return arrays
    return {k: v[rank::world_size] for k, v in arrays.items()}


def broadcast_from_rank0(tree, group):
    """Rank 0's values of a tree of arrays on every rank: one sum per dtype, in which the
    other ranks add zeros (few large messages rather than one per parameter)."""
    if group is None:
        return tree
    arrays = {k: v for k, v in tree_flatten(tree) if isinstance(v, mx.array)}
    received = {}
    for dtype in sorted({v.dtype for v in arrays.values()}, key=str):
        keys = [k for k, v in arrays.items() if v.dtype == dtype]
        joined = mx.concatenate([arrays[k].reshape(-1) for k in keys])
        if group.rank() != 0:
            joined = mx.zeros_like(joined)
        offsets = np.cumsum([arrays[k].size for k in keys])[:-1].tolist()
        parts = mx.split(mx.distributed.all_sum(joined, group=group), offsets)
        received.update({k: part.reshape(arrays[k].shape) for k, part in zip(keys, parts)})
    mx.eval(list(received.values()))
    # mapping over the original tree keeps its empty branches (a frozen module's), which
    # the optimizer state mirrors
    return tree_map_with_path(lambda path, v: received.get(path, v), tree)


def broadcast_ints(values, group):
    """Rank 0's list of Python ints on every rank."""
    if group is None:
        return list(values)
    ints = mx.array(values if group.rank() == 0 else [0] * len(values), dtype=mx.int64)
    return [int(v) for v in mx.distributed.all_sum(ints, group=group).tolist()]


class PeerLostError(RuntimeError):
    """A collective came back without every rank's contribution."""


def check_peers(group):
    """Raise PeerLostError unless every rank answers a sum of ones.

    When a rank dies mid-step, MLX 0.32's ring backend raises on one waiting array but can
    hand back other collectives in flight holding only this rank's data, without an error.
    Collectives run in order over reliable sockets, so a correct answer here means every
    earlier one was complete: call it before writing weights computed by collectives.
    """
    answered = mx.distributed.all_sum(mx.ones(1, dtype=mx.int32), group=group).item()
    if answered != group.size():
        raise PeerLostError(f"[ring] connection to a peer was lost ({answered} of {group.size()} ranks answered)")


def peer_lost(error):
    """Whether an exception from a collective means another rank stopped or became unreachable."""
    return isinstance(error, PeerLostError) or (
        isinstance(error, RuntimeError) and any(p in str(error) for p in PEER_LOST_PHRASES))


STALL_TIMEOUT_ENV = "MLX_HJEPA_STALL_TIMEOUT"
DEFAULT_STALL_TIMEOUT = 600.0  # seconds; far above one step, below a lost night
STALL_EXIT_CODE = 3


def stall_timeout_from_env():
    """Seconds from MLX_HJEPA_STALL_TIMEOUT (default 600; 0 turns the watchdog off)."""
    value = os.environ.get(STALL_TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_STALL_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ValueError(f"{STALL_TIMEOUT_ENV}={value!r} is not a number of seconds; set it to e.g. 600, or 0 to "
                         "turn the stall watchdog off.")
    return seconds


class StallWatchdog:
    """Ends this process if no training step finishes for `timeout` seconds while armed.

    `kick()` after every finished step arms it; `pause()` disarms it until the next kick
    (before the first step's compile, and at epoch ends, where rank 0 checkpoints and
    evaluates while the others wait). On a stall it writes one sentence to stderr and
    exits with STALL_EXIT_CODE; mlx.launch then terminates the other ranks.
    """

    def __init__(self, timeout, rank, world_size):
        self.timeout, self.rank, self.world_size = float(timeout), rank, world_size
        self._last = None
        self._step = 0
        if self.timeout > 0:
            threading.Thread(target=self._watch, name="stall-watchdog", daemon=True).start()

    def kick(self, step):
        self._last, self._step = time.monotonic(), step

    def pause(self):
        self._last = None

    def _watch(self):
        while True:
            time.sleep(min(5.0, self.timeout / 4))
            last = self._last
            if last is not None and time.monotonic() - last > self.timeout:
                sys.stderr.write(
                    f"error: rank {self.rank} of {self.world_size}: no training step finished for "
                    f"{self.timeout:g} s after step {self._step}; another rank is stuck or its host is unreachable "
                    f"(asleep, cable or network down), and the ring backend waits without a timeout. Stopping this "
                    f"rank so mlx.launch ends the others; fix the host and rerun with --resume auto "
                    f"({STALL_TIMEOUT_ENV}=SECONDS changes this wait, 0 turns it off).\n")
                sys.stderr.flush()
                os._exit(STALL_EXIT_CODE)

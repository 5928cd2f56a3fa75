"""Two CPU streams for the training step: each half of the batch on its own core.

MLX's CPU backend runs every operation of a stream on that stream's one thread. BLAS calls can
use more cores, but element-wise kernels, reductions, softmax, layer norms and copies do not: at
ViT-Ti/16 @96 on a 2-core machine they are about half of the step, all on one core. The H-JEPA
loss of a batch is the mean of its images' losses (objective.hierarchical_loss), so the step
splits the batch in two, runs the forward and backward pass of the first half on the default
CPU stream and of the second half on a second one (MLX gives every stream its own thread),
and averages the two gradients, weighted by the halves' sizes, before the one optimiser update.
That is the same loss and the same gradient, summed in a different order (float rounding
apart), computed by two cores that share nothing until the average.

Each stream then calls the BLAS for its own half, so the BLAS runs one thread per call
(`openblas_set_num_threads(1)`, process-wide, from the first step on): two streams each asking
a 2-thread OpenBLAS for both cores ran slower than one stream.

Applies on MLX's CPU backend when the process may use two or more cores and MLX's BLAS is an
OpenBLAS whose threads can be set (the Linux default, see _blas.py). Elsewhere the step runs on
one stream: on a GPU (its kernels already fill the device), with the VICReg terms (their batch
statistics do not split), for a batch of one, and in a job of several processes (a dead peer
fails the collective's stream, and the other stream could wait on it forever).
MLX_HJEPA_CPU_STREAMS=1 keeps one stream (what `benchmarks/vs_peers.py --threads 1` sets, so a
one-thread comparison stays on one core); `python -m mlx_hjepa.info` says which applies. The
one-thread BLAS holds for the rest of the process (an in-run evaluation's matmuls included).

How far the two streams overlap depends on the order MLX hands operations to them. MLX builds
that order breadth-first, but only 20 arrays wide (MLX_BFS_MAX_WIDTH), then goes depth-first:
down one half's graph for long runs while at most 10 tasks may be queued, so the other stream
waits. `widen_eval_window()` (called by `python -m mlx_hjepa.train` before anything is
evaluated, and by the benchmarks) sets it to 200 where the step will use two streams: at
ViT-S/16 @224 on 2 cores the step then takes 7.2 s instead of 10.8 s (1.9 instead of 1.1 cores
busy; peak memory +3%); with one stream the setting changes nothing (10.2 vs 10.3 s).
A value the user set is kept.
"""

import os

import mlx.core as mx

from . import _blas

ENV = "MLX_HJEPA_CPU_STREAMS"
BFS_WIDTH_ENV, BFS_WIDTH = "MLX_BFS_MAX_WIDTH", 200  # MLX reads it once, at the first evaluation

_side = None  # the second stream, created once per process (MLX starts a thread for each stream)
_blas_controllable = None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no sched_getaffinity
        return os.cpu_count() or 1


def blas_threads_controllable() -> bool:
    global _blas_controllable
    if _blas_controllable is None:
        _blas_controllable = bool(_blas.bound_blas())
    return _blas_controllable


def planned(device=None) -> str:
    """"two" (the step splits its batch over two CPU streams), "disabled" (the env var),
    "one_core", "blas" (no control over the BLAS's threads) or "gpu" (one stream)."""
    device = device if device is not None else mx.default_device()
    value = os.environ.get(ENV, "").strip()
    if value not in ("", "1", "2"):
        raise ValueError(f"{ENV} is {value!r}; set it to 1 (one CPU stream) or 2 (the default), or unset it.")
    if getattr(device, "type", device) != mx.DeviceType.cpu:  # a Device or a DeviceType (mx.cpu)
        return "gpu"
    if value == "1":
        return "disabled"
    if available_cores() < 2:
        return "one_core"
    if not blas_threads_controllable():
        return "blas"
    return "two"


def side_stream():
    """The second CPU stream (BLAS set to one thread per call), or None where the step uses one."""
    global _side
    if planned() != "two":
        return None
    if _side is None:
        _side = mx.new_stream(mx.cpu)
        _blas.set_threads(1)
    return _side


def widen_eval_window() -> bool:
    """Set MLX_BFS_MAX_WIDTH to 200 (see above) unless it is set, this MLX build has a GPU (runs
    default to it) or the step would use one CPU stream. Call before the process's first MLX
    evaluation: MLX reads the variable once. Returns whether it set it."""
    if BFS_WIDTH_ENV in os.environ or mx.is_available(mx.gpu) or planned(mx.cpu) != "two":
        return False
    os.environ[BFS_WIDTH_ENV] = str(BFS_WIDTH)
    return True

"""mx.distributed helpers: one group for the run, or None when there is a single process."""

import mlx.core as mx


def init_distributed():
    """The launcher's group (mlx.launch sets it up), or None for a plain single-process run."""
    group = mx.distributed.init()
    return group if group.size() > 1 else None

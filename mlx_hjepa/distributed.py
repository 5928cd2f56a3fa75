"""mx.distributed helpers for data-parallel training launched with `mlx.launch`.

The launcher starts one process per rank and sets up the group (ring over TCP or
Thunderbolt, MPI, ...). Every rank builds the same model from the same seed, reads its
own shard of each epoch and takes its rows of the global batch's masks; the step
averages gradients over the group, so all ranks stay bit-identical. Only rank 0 writes.

When a rank dies its sockets close and the others' next collective fails with
"[ring] connection to a peer was lost" (mlx 0.32); `peer_lost` recognises that so the
trainer can stop with one sentence instead of a traceback, and `mlx.launch` then
terminates the remaining ranks.
"""

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


def peer_lost(error):
    """Whether an exception from a collective means another rank stopped or became unreachable."""
    return isinstance(error, RuntimeError) and any(p in str(error) for p in PEER_LOST_PHRASES)

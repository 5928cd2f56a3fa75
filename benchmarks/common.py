"""Shared bits for benchmark scripts: machine/version header and markdown tables."""

import mlx_hjepa  # noqa: F401  (fast BLAS before mlx.core)
from mlx_hjepa import _jit, _malloc, _streams
from mlx_hjepa import config as C
from mlx_hjepa import info
from mlx_hjepa.models import HJEPA
from mlx_hjepa.rules import PRESETS


_malloc.keep_freed_memory()  # as the train/eval commands do, so benchmarks time what they run
_streams.widen_eval_window()  # as the train command does (before any evaluation)
_jit.use_jit_flags()  # as the train/eval commands do (before MLX compiles a kernel)


def header():
    rep = info.collect(measure=False)
    versions = ", ".join(f"{k} {v}" for k, v in rep["versions"].items())
    blas = rep["blas"]["library"] or "unknown"
    return (f"machine: {rep['platform']}, {rep['cpu']} ({rep['cpu_cores']} cores), device {rep['default_device']}\n"
            f"versions: {versions}\nblas: {blas}")


def print_table(title, columns, rows):
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    print(f"\n{title}\n{header()}\n")
    print(line(columns))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def bench_model(name, img_size, act="gelu", levels=None):
    """The model a user trains with these sizes, through the production factory: predictor
    min(384, width) x 6 with the encoder's heads; 3 levels, or 2 where config validation refuses the
    third (its windows never fit a target block). `levels` forces a count (the vs-PyTorch port has 3)."""
    overrides = {"data": {"dataset": "synthetic", "image_size": img_size},
                 "model": {"encoder_type": f"{name}_patch16", "activation": act,
                           "predictor": {"embed_dim": min(384, PRESETS[name]["embed_dim"]), "depth": 6}}}
    if levels is not None:
        cfg = C.load_config(overrides, ["model.num_hierarchies=1"])
        return HJEPA.from_config({**C.model_config(cfg), "num_hierarchies": levels}, seed=0)
    try:
        cfg = C.load_config(overrides, ["model.num_hierarchies=3"])
    except C.ConfigError:
        cfg = C.load_config(overrides, ["model.num_hierarchies=2"])
    return HJEPA.from_config(C.model_config(cfg), seed=0)

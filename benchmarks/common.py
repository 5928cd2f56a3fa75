"""Shared bits for benchmark scripts: machine/version header and markdown tables."""

import mlx_hjepa  # noqa: F401  (fast BLAS before mlx.core)
from mlx_hjepa import info


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

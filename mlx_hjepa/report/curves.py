"""Section 5: training curves from metrics.jsonl, drawn with matplotlib (the optional [viz] extra)."""

INSTALL_HINT = 'Curves need matplotlib: pip install -e ".[viz]" (or pip install matplotlib), then rerun the report.'


def have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _series(records, key):
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def panels(records, dataset_weights=None, vicreg_level_weights=None):
    """{panel title: {series name: (steps, values)}} for every panel the metrics can fill.
    Training lines are those with a loss; k-NN lines those with knn_top1 (the final event is not repeated).
    dataset_weights: {name: configured weight} of a mix; vicreg_level_weights: the hierarchy weights of a
    run with VICReg on, whose variance + covariance terms are the total minus the weighted level losses."""
    train = [r for r in records if "loss" in r and "event" not in r]
    knn = [r for r in records if "knn_top1" in r and "event" not in r]
    out = {}

    def add(title, keys, source=train):
        series = {name: _series(source, key) for name, key in keys}
        series = {name: s for name, s in series.items() if s[0]}
        if series:
            out[title] = series

    levels = sorted(k for r in train for k in r if k.startswith("loss_level"))
    add("loss", [("total", "loss")] + [(f"level {k[10:]}", k) for k in dict.fromkeys(levels)])
    add("learning rate", [("lr", "lr")])
    add("weight decay", [("weight decay", "weight_decay")])
    add("EMA momentum", [("momentum", "ema_momentum")])
    add("gradient norm", [("grad norm", "grad_norm")])
    add("target feature std", [("std", "target_std")])
    add("effective rank (RankMe)", [("rank", "effective_rank")])
    if any("variance" in r for r in train):  # logged by the step since issue 14
        add("VICReg terms (unweighted)", [("variance", "variance"), ("covariance", "covariance")])
    elif vicreg_level_weights:  # older runs: recover the weighted sum from the total
        levels = [f"loss_level{i}" for i in range(len(vicreg_level_weights))]
        rows = [r for r in train if all(k in r for k in levels)]
        if rows:
            out["VICReg terms (total - weighted levels)"] = {"variance + covariance": (
                [r["step"] for r in rows],
                [r["loss"] - sum(w * r[k] for w, k in zip(vicreg_level_weights, levels)) for r in rows])}
    add("k-NN accuracy", [("top-1", "knn_top1"), ("top-5", "knn_top5")], knn)
    add("images / s", [("img/s", "img_per_s")])
    add("peak memory (GB)", [("memory", "peak_memory_gb")])
    mixed = [r for r in train if isinstance(r.get("dataset_mix"), dict) and sum(r["dataset_mix"].values())]
    names = list(dict.fromkeys(n for r in mixed for n in r["dataset_mix"]))
    if mixed and len(set(names) | set(dataset_weights or {})) > 1:
        mix = {}
        for n in names:
            mix[f"{n} share"] = ([r["step"] for r in mixed],
                                 [r["dataset_mix"].get(n, 0) / sum(r["dataset_mix"].values()) for r in mixed])
        logged = [r for r in mixed if isinstance(r.get("dataset_weights"), dict)]
        total = sum((dataset_weights or {}).values())
        if logged:  # the configured shares of each window's epoch (they follow data.weight_schedule)
            for n in names:
                mix[f"{n} weight"] = ([r["step"] for r in logged], [r["dataset_weights"].get(n, 0.0) for r in logged])
        else:
            for n, w in (dataset_weights or {}).items():
                if mixed and total > 0:
                    mix[f"{n} weight"] = ([mixed[0]["step"], mixed[-1]["step"]], [w / total] * 2)
        out["dataset mix per window"] = mix
    return out


def plot(records, path, dataset_weights=None, vicreg_level_weights=None, columns=3):
    """Draw every panel into one PNG at `path`; returns {panel: {series: number of points}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = panels(records, dataset_weights, vicreg_level_weights)
    if not data:
        return {}
    rows = -(-len(data) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.8 * rows), squeeze=False)
    for ax, (title, series) in zip(axes.flat, data.items()):
        for name, (steps, values) in series.items():
            dashed = name.endswith(" weight")
            ax.plot(steps, values, "--" if dashed else "-", marker="o" if len(steps) < 20 else None,
                    markersize=3, linewidth=1.2, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(data):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return {title: {name: len(s[0]) for name, s in series.items()} for title, series in data.items()}


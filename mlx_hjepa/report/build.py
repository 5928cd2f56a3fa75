"""The run report: six sections from a run directory into report/index.html and its PNGs."""

import time
from html import escape
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from .. import config as C
from ..data import build_eval_datasets
from ..eval.features import extract_features
from ..viz import analysis, overlays
from ..weights import write_text_atomic
from . import curves, html, run as R

NUM_MASK_IMAGES = 8
NUM_ATTENTION_IMAGES = 3
NUM_FEATURE_IMAGES = 8
NUM_QUERIES = 8
NUM_NEIGHBOURS = 5
FILES = {"masks": "masks.png", "attention": "attention.png", "features": "features.png",
         "neighbours": "neighbours.png", "curves": "curves.png"}


def save(image, path):
    image.save(path, optimize=True)
    return path.name


def masks_section(run, out):
    images, masks = R.training_sample(run.cfg, NUM_MASK_IMAGES)
    picture, _ = overlays.masks_grid(images, masks, run.encoder.grid_size, run.encoder.patch_size)
    name = save(picture, out / FILES["masks"])
    levels = run.cfg.model.num_hierarchies
    windows = ", ".join(f"level {lv}: {2 ** lv}x{2 ** lv} patches" for lv in range(1, levels))
    note = (f"The first {len(images)} images of the run's first batch (its own crops) with that step's masks: the context "
            "tokens the encoder saw (blue tint, context block outlined) and each target block"
            + (f"; inset, the pooling windows of each coarser level ({windows}) that lie wholly inside a target "
               "block, the only ones the loss uses." if windows else " (one level: no pooling windows)."))
    return html.section("1. Masks and hierarchy windows", note, name)


def pick(dataset, count):
    """Evenly spaced indices: deterministic and spread over the classes of a sorted split."""
    return np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int))


def eval_images(dataset, indices):
    return np.stack([np.asarray(dataset.transform(dataset[int(i)]["image"]), dtype=np.uint8) for i in indices])


def attention_section(run, val, out):
    images = eval_images(val, pick(val, NUM_ATTENTION_IMAGES))
    weights = analysis.last_block_attention(run.encoder, R.normalize(images))
    queries = overlays.query_patches(run.encoder.grid_size)
    picture = overlays.attention_figure(images, weights, run.encoder.grid_size, run.encoder.patch_size, queries)
    note = ("Target encoder, last block, one row per head: where the marked query patches (green squares) attend, "
            "and the mean attention over all queries; each map is stretched from its minimum (dark) to its maximum (bright) and upsampled over the image.")
    return html.section("2. Attention", note, save(picture, out / FILES["attention"]))


def features_section(run, random_encoder, val, out):
    images = eval_images(val, pick(val, NUM_FEATURE_IMAGES))
    x = R.normalize(images)
    maps = {name: analysis.pca_rgb(analysis.patch_features(enc, x), run.encoder.grid_size)
            for name, enc in (("trained", run.encoder), ("random init", random_encoder))}
    note = ("The first three principal components of the last block's patch features (fitted over these images' "
            "patches together) as red, green and blue: patches the encoder sees as alike share a colour.")
    return html.section("3. Feature maps (PCA)", note, save(overlays.features_figure(images, maps), out / FILES["features"]))


def neighbours_section(run, random_encoder, train, val, out):
    queries = pick(val, NUM_QUERIES)
    query_images = eval_images(val, queries)
    columns = {}
    for name, enc in (("trained", run.encoder), ("random init", random_encoder)):
        bank, bank_labels = extract_features(enc, train, batch_size=256, num_workers=2, cache_dir=run.feature_cache)
        feats = analysis.patch_features(enc, R.normalize(query_images)).mean(axis=1)
        idx, _ = analysis.top_neighbours(bank, feats, NUM_NEIGHBOURS)
        images = np.stack([eval_images(train, row) for row in idx])
        columns[name] = (images, bank_labels[idx])
    picture = overlays.neighbours_figure(query_images, val.labels[queries], columns, list(train.classes))
    note = (f"{len(queries)} {val.name} {getattr(val, 'split', 'val')} images and their {NUM_NEIGHBOURS} nearest "
            f"{train.name} train images by the k-NN evaluation's similarity (cosine of mean-pooled features), trained "
            "beside random init; green frame: same label as the query. Train features are cached in the run's "
            "feature_cache/, shared with python -m mlx_hjepa.eval.")
    return html.section("4. Nearest neighbours", note, save(picture, out / FILES["neighbours"]))


def curves_section(run, out):
    if not curves.have_matplotlib():
        return html.section("5. Curves", curves.INSTALL_HINT), None
    d = run.cfg.data
    weights = {e.name: e.weight for e in d.datasets} if d.use_multi_dataset else None
    vicreg = list(run.cfg.loss.hierarchy_weights) if run.cfg.loss.use_vicreg else None
    counts = curves.plot(run.metrics, out / FILES["curves"], weights, vicreg)
    if not counts:
        return html.section("5. Curves", "metrics.jsonl holds no training lines yet."), counts
    note = f"From metrics.jsonl ({len(run.metrics)} lines); x axis: optimizer step."
    return html.section("5. Curves", note, FILES["curves"]), counts


def wall_time(run):
    """Seconds from run.json (written at launch) to the last metrics line: file times, not a clock in the run."""
    start, end = run.path / "run.json", run.path / "metrics.jsonl"
    if not (start.is_file() and end.is_file()):
        return None
    return max(0.0, end.stat().st_mtime - start.stat().st_mtime)


def eval_rows(run):
    rows = []
    knn = run.evals.get("eval_knn.json")
    if knn:
        rows.append(("in-run k-NN (eval_knn.json)", "top-1", f"{knn['trained']['knn_top1']:.2%}",
                     f"{knn['random_init']['top1']:.2%}"))
    trained, baseline = run.evals.get("eval.json"), run.evals.get("eval_random_init.json") or {}
    for protocol in ("knn", "linear"):
        if trained and protocol in trained:
            base = baseline.get(protocol, {})
            for key in ("top1", "top5"):
                rows.append((f"{protocol} on {trained.get('dataset', '?')} (eval.json)", key,
                             f"{trained[protocol][key]:.2%}", f"{base[key]:.2%}" if key in base else "not run"))
    return rows


def header(run, seconds):
    cfg, enc = run.cfg, run.encoder
    params = sum(v.size for _, v in tree_flatten(enc.parameters()))
    d = cfg.data
    mix = ", ".join(f"{e.name} (weight {e.weight:g})" for e in d.datasets) if d.use_multi_dataset else d.dataset
    last = next((r for r in reversed(run.metrics) if "loss" in r), {})
    wall = wall_time(run)
    facts = [("run directory", str(run.path.resolve())), ("weights", str(run.weights)),
             ("encoder", f"{params / 1e6:.2f}M parameters, {enc.depth} blocks, width {enc.embed_dim}, {enc.num_heads} "
                         f"heads, {enc.img_size}px in {enc.patch_size}px patches ({enc.grid_size[0]}x{enc.grid_size[1]})"),
             ("hierarchy", f"{cfg.model.num_hierarchies} levels, weights {cfg.loss.hierarchy_weights}"),
             ("data", f"{mix}; batch {d.batch_size}, {cfg.training.epochs} epochs"),
             ("progress", f"step {last['step']}, in epoch {last['epoch'] + 1} of {cfg.training.epochs}" if last
              else "no training lines"),
             ("wall time", f"{wall / 60:.1f} min (run.json to the last metrics line)" if wall is not None else "unknown"),
             ("world size", str(run.launch.get("world_size", 1))),
             ("report", f"{seconds:.1f} s of CPU time to write")]
    rows = eval_rows(run)
    evals = html.table(("evaluation", "metric", "trained", "random init (baseline)"), rows) if rows else \
        '<p class="note">No eval.json or eval_knn.json in the run directory yet.</p>'
    config = f"<details><summary>resolved config</summary><pre>{escape(C.config_to_yaml(cfg))}</pre></details>"
    return html.table(("", ""), facts) + evals + config


def unless_data_missing(title, make, strict=False):
    """make(), or, when the run's data cannot be read here, a section (or with title None, a sentence) saying so."""
    try:
        return make()
    except (FileNotFoundError, ValueError) as err:
        if strict:
            raise
        reason = f"Skipped: the run's data cannot be read here ({err}); pass --dataset and --data-path."
        return reason if title is None else html.section(title, reason)


def write_report(run_dir, out=None, dataset=None, data_path=None, split=None, log=print):
    """Write report/index.html and its PNGs; returns the path of index.html."""
    start = time.process_time()
    run = R.open_run(run_dir)
    out = Path(out) if out else run.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    for stale in FILES.values():
        (out / stale).unlink(missing_ok=True)
    mx.eval(run.encoder.parameters())
    random_encoder = R.random_init_like(run.encoder, run.cfg)
    log("report: masks")
    sections = [unless_data_missing("1. Masks and hierarchy windows", lambda: masks_section(run, out))]
    explicit = dataset or data_path or split  # data the user named must exist; the run's own may be elsewhere now
    splits = unless_data_missing(None, lambda: build_eval_datasets(run.cfg, dataset, data_path, split), explicit)
    if isinstance(splits, str):
        sections += [html.section(title, splits) for title in ("2. Attention", "3. Feature maps (PCA)",
                                                               "4. Nearest neighbours")]
    else:
        train, val = splits
        log("report: attention")
        sections.append(attention_section(run, val, out))
        log("report: feature maps")
        sections.append(features_section(run, random_encoder, val, out))
        log("report: nearest neighbours")
        sections.append(neighbours_section(run, random_encoder, train, val, out))
    curves_html, counts = curves_section(run, out)
    if counts is None:
        log(curves.INSTALL_HINT)
    sections.append(curves_html)
    seconds = time.process_time() - start
    sections.insert(0, html.section("Run", None, extra=header(run, seconds)))
    return write_text_atomic(out / "index.html", html.page(f"mlx-hjepa run report: {run.cfg.experiment.name}", sections))

"""The full training step of mlx-hjepa against the PyTorch code a user would otherwise run.

Peers, each built from its own repository's classes the way its training script wires them:
  hjepa   the PyTorch H-JEPA project (github.com/jonwiggins/H-JEPA): create_hjepa_from_config,
          HierarchicalMaskGenerator, create_loss_from_config, create_optimizer and HJEPATrainer from
          its configs/m1_max_imagenet100_100epoch.yaml (ViT size and image size set per row, AMP off:
          its trainer turns AMP off on the CPU anyway). Timed: HJEPATrainer._train_epoch, per batch.
  ijepa   FAIR's I-JEPA (github.com/facebookresearch/ijepa): helper.init_model, init_opt,
          masks.multiblock.MaskCollator with the released mask settings (configs/in1k_vith14_ep300.yaml)
          and predictor (12 x 384); the step is train.py's train_step closure, calling its own
          apply_masks, repeat_interleave_batch, AllReduce and grad_logger. Masks are drawn before the
          timed loop, as its DataLoader workers draw them beside the step.
  ijepa6  the same I-JEPA with mlx-hjepa's predictor size (6 deep, min(384, width) wide).
mlx-hjepa runs its default config (python -m mlx_hjepa.train's step: TrainStep from
HJEPA.from_config) at the same encoder, image size, batch and predictor (6 x min(384, width));
`--systems mlx,mlx_gelu,...` adds it with model.activation: gelu (exact GELU, the old default);
`mlx_ijm` runs it at the mask sizes I-JEPA's collator actually draws (its context block is never
the full grid; min_keep 3 at 96 px), so that it and ijepa6 do about the same FLOPs: the
like-for-like pair; `mlx_nomallopt` runs it without the allocator setting the train/eval commands
apply (mlx_hjepa/_malloc.py); `mlx_onestream` runs it on one CPU stream instead of splitting
each batch over two (mlx_hjepa/_streams.py; what every mlx row does at --threads 1, where each
system gets one thread); `mlx_nojitflags` with MLX's own flags for its CPU kernel compiler
(mlx_hjepa/_jit.py).

Workarounds live here, not in the peers' code: I-JEPA's MaskCollator loops forever at 96 px
with min_keep 10 (3 is used there); I-JEPA wraps its models in DistributedDataParallel
unconditionally (built without it here: one process); H-JEPA's mask module imports matplotlib
at import time (a stub module is put in sys.modules if matplotlib is missing).

Every run is its own process (a fresh interpreter per system, row and round), rounds interleave
the systems in rotating order, and every process gets the same thread count (OMP/OpenBLAS/MKL
env vars; torch.set_num_threads). Reported: img/s median and fastest over rounds, process CPU
time per image (every thread, spinning included: on a machine shared with other jobs it moves
less than wall time), GFLOP/img
(mlx-hjepa: models.step_flops, analytic; peers: torch.utils.flop_counter over one step: the
same matmul, convolution and attention FLOPs, forward and backward), achieved GFLOP/s, and the
process's peak resident memory. The ratio lines are medians of per-round ratios.

    git clone https://github.com/jonwiggins/H-JEPA /tmp/H-JEPA
    git clone https://github.com/facebookresearch/ijepa /tmp/ijepa
    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch torchvision timm einops pyyaml
    python benchmarks/vs_peers.py --hjepa /tmp/H-JEPA --ijepa /tmp/ijepa --torch-python /tmp/torchvenv/bin/python
    python benchmarks/vs_peers.py ... --rows tiny96 --rounds 3
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROWS = {"tiny96": ("ViT-Ti/16 @96", "vit_tiny", 192, 96), "small224": ("ViT-S/16 @224", "vit_small", 384, 224)}
STEPS = {"tiny96": (3, 8), "small224": (1, 2)}  # (warmup, timed) steps per process
# 3 levels where the config allows them: on a 6x6 grid a target block never holds a 4x4 window
LEVELS = {"tiny96": ["model.num_hierarchies=2", "loss.hierarchy_weights=[1.0,0.5]"], "small224": []}
# I-JEPA's collator draws its context block with h < H and w < W (a 5x5 block on a 6x6 grid, 13x13 on
# 14x14, whatever the 0.85-1.0 scale says) and runs at min_keep 3 at 96 px (see above): mlx_ijm is
# mlx-hjepa at those effective settings, so the two see about the same token counts (GFLOP/img within
# a few per cent: Kc 5.3 vs 6.2 at 96 px, 49 vs 56 at 224 px; ours rounds Kc down to a bucket).
IJEPA_MASKS = {"tiny96": ["masking.min_keep=3", "masking.context_scale=[0.69,0.7]"],
               "small224": ["masking.context_scale=[0.86,0.87]"]}
SYSTEMS = ("mlx", "mlx_gelu", "mlx_ijm", "mlx_nomallopt", "mlx_onestream", "mlx_nojitflags", "hjepa", "ijepa", "ijepa6")
LABELS = {"mlx": "mlx-hjepa (default config)", "mlx_gelu": "mlx-hjepa, model.activation: gelu (exact)",
          "mlx_ijm": "mlx-hjepa at I-JEPA's effective mask sizes",
          "mlx_nomallopt": "mlx-hjepa, MLX_HJEPA_NO_MALLOPT=1 (freed memory back to the kernel)",
          "mlx_onestream": "mlx-hjepa, MLX_HJEPA_CPU_STREAMS=1 (one CPU stream)",
          "mlx_nojitflags": "mlx-hjepa, MLX_HJEPA_NO_JIT_FLAGS=1 (MLX's own compiler flags)",
          "hjepa": "PyTorch H-JEPA (its trainer, 3 levels)",
          "ijepa": "FAIR I-JEPA (released: predictor 12x384)", "ijepa6": "FAIR I-JEPA, predictor 6 x min(384, width)"}


# ---------------------------------------------------------------- workers (one process each)
def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def mlx_step(row, batch, overrides=()):
    """(model, TrainStep, mask sampler) of mlx-hjepa's default config at a row's sizes, with the
    memory, evaluation-order and kernel-compiler settings python -m mlx_hjepa.train applies
    (MLX_HJEPA_NO_MALLOPT=1: mlx_nomallopt; MLX_HJEPA_NO_JIT_FLAGS=1: mlx_nojitflags).
    Imports MLX only when called: the torch workers never do. profile_step.py builds the same."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import mlx_hjepa  # noqa: F401  (fast BLAS before mlx.core)
    from mlx_hjepa._malloc import keep_freed_memory
    from mlx_hjepa._jit import use_jit_flags
    from mlx_hjepa._streams import widen_eval_window
    from mlx_hjepa.config import load_config, model_config
    from mlx_hjepa.masks import MultiBlockMaskSampler
    from mlx_hjepa.models import HJEPA
    from mlx_hjepa.train.schedules import Schedules
    from mlx_hjepa.train.step import StepOptions, TrainStep

    keep_freed_memory()
    widen_eval_window()
    use_jit_flags()
    _, name, dim, size = ROWS[row]
    cfg = load_config(None, [f"model.encoder_type={name}", f"data.image_size={size}", f"data.batch_size={batch}",
                             f"model.predictor.embed_dim={min(384, dim)}", "model.predictor.depth=6",
                             "data.dataset=synthetic"] + LEVELS[row] + list(overrides))
    model = HJEPA.from_config(model_config(cfg), seed=cfg.experiment.seed)
    step = TrainStep(model, Schedules.from_config(cfg, steps_per_epoch=1000), StepOptions.from_config(cfg))
    return model, step, MultiBlockMaskSampler.from_config(cfg.masking, model.grid_size, cfg.model.num_hierarchies)


def worker_mlx(row, batch, warmup, steps, _path, overrides=()):
    model, step, sampler = mlx_step(row, batch, overrides)
    import mlx.core as mx
    import numpy as np

    from mlx_hjepa.models import step_flops

    size = ROWS[row][3]
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8), sampler(batch, 0, i))
               for i in range(warmup + steps)]
    # A new token count is a new trace; a run meets each of the sampler's few shapes early and then
    # reuses it, so every shape the timed batches hold is traced before the clock starts.
    shapes = {tuple(m[k].shape for k in ("context", "targets")): (images, m) for images, m in batches}
    for images, masks in list(batches[:warmup]) + list(shapes.values()):
        mx.eval(step(images, masks))
    times, cpu = [], time.process_time()
    for images, masks in batches[warmup:]:
        start = time.perf_counter()
        mx.eval(step(images, masks))
        times.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    flops = statistics.mean(step_flops(model.config(), m["context"].shape[1], *m["targets"].shape[1:]) for _, m in batches)
    return dict(seconds=sum(times), cpu_seconds=cpu, gflop_per_img=flops / 1e9,
                activation=getattr(model.encoder, "act", "?"), traces=step.trace_count,
                mlx_peak_gib=mx.get_peak_memory() / 2**30)


def _stub_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        import types
        for mod in ("matplotlib", "matplotlib.pyplot", "matplotlib.cm", "matplotlib.patches"):
            sys.modules[mod] = types.ModuleType(mod)


def count_torch_flops(fn):
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def worker_hjepa(row, batch, warmup, steps, path):
    import tempfile

    import torch
    import yaml
    sys.path.insert(0, path)
    _stub_matplotlib()
    from src.losses import create_loss_from_config
    from src.masks import HierarchicalMaskGenerator
    from src.models import create_hjepa_from_config
    from src.trainers import HJEPATrainer, create_optimizer

    _, name, dim, size = ROWS[row]
    cfg = yaml.safe_load(open(Path(path) / "configs" / "m1_max_imagenet100_100epoch.yaml"))
    tmp = tempfile.mkdtemp(prefix="vs_peers_hjepa_")
    cfg["model"].update(encoder_type=f"{name}_patch16_224", embed_dim=dim)
    cfg["data"].update(image_size=size, batch_size=batch)
    cfg["training"].update(use_amp=False)
    cfg["logging"].update(use_tensorboard=False, use_wandb=False, log_dir=tmp)
    cfg["checkpoint"]["checkpoint_dir"] = tmp
    torch.manual_seed(0)
    model = create_hjepa_from_config(cfg)
    masking = HierarchicalMaskGenerator(input_size=(size, size), patch_size=16,
                                        num_hierarchies=cfg["model"]["num_hierarchies"],
                                        num_target_masks=cfg["masking"].get("num_masks", 4),
                                        base_scale=tuple(cfg["masking"].get("mask_scale", [0.05, 0.15])),
                                        aspect_ratio_range=tuple(cfg["masking"].get("aspect_ratio", [0.75, 1.5])))
    loss_fn = create_loss_from_config(cfg)
    optimizer = create_optimizer(model=model, config=cfg)
    images = [(torch.randn(batch, 3, size, size), torch.zeros(batch, dtype=torch.long))
              for _ in range(warmup + steps + 1)]
    trainer = HJEPATrainer(model=model, train_loader=images, val_loader=None, optimizer=optimizer, loss_fn=loss_fn,
                           masking_fn=masking, config=cfg, device="cpu")
    starts, inner = [], trainer._train_step

    def stamped(*a, **k):  # a step is from one _train_step call to the next: forward, backward, update, logging
        starts.append((time.perf_counter(), time.process_time()))
        return inner(*a, **k)
    trainer._train_step = stamped
    trainer._train_epoch(0)
    (wall0, cpu0), (wall1, cpu1) = starts[warmup], starts[warmup + steps]

    def one_step():
        loss, _ = inner(images[0], 0, 1)
        loss.backward()
        optimizer.zero_grad()
    return dict(seconds=wall1 - wall0, cpu_seconds=cpu1 - cpu0,
                gflop_per_img=count_torch_flops(one_step) / batch / 1e9)


def worker_ijepa(row, batch, warmup, steps, path, pred_depth=12, pred_dim=384):
    import copy

    import torch
    import torch.nn.functional as F
    import yaml
    sys.path.insert(0, path)
    from src.helper import init_model, init_opt
    from src.masks.multiblock import MaskCollator
    from src.masks.utils import apply_masks
    from src.utils.distributed import AllReduce
    from src.utils.logging import grad_logger
    from src.utils.tensors import repeat_interleave_batch

    _, name, dim, size = ROWS[row]
    args = yaml.safe_load(open(Path(path) / "configs" / "in1k_vith14_ep300.yaml"))
    m, o = args["mask"], args["optimization"]
    torch.manual_seed(0)
    device = torch.device("cpu")
    encoder, predictor = init_model(device=device, patch_size=16, crop_size=size, pred_depth=pred_depth,
                                    pred_emb_dim=pred_dim, model_name=name)
    target_encoder = copy.deepcopy(encoder)  # train.py then wraps all three in DDP: not here (one process)
    for p in target_encoder.parameters():
        p.requires_grad = False
    collator = MaskCollator(input_size=size, patch_size=16, pred_mask_scale=m["pred_mask_scale"],
                            enc_mask_scale=m["enc_mask_scale"], aspect_ratio=m["aspect_ratio"],
                            nenc=m["num_enc_masks"], npred=m["num_pred_masks"], allow_overlap=m["allow_overlap"],
                            min_keep=m["min_keep"] if size > 96 else 3)  # 10 never terminates on a 6x6 grid
    ipe, epochs = 1000, o["epochs"]
    optimizer, scaler, scheduler, wd_scheduler = init_opt(
        encoder=encoder, predictor=predictor, wd=float(o["weight_decay"]), final_wd=float(o["final_weight_decay"]),
        start_lr=o["start_lr"], ref_lr=o["lr"], final_lr=o["final_lr"], iterations_per_epoch=ipe,
        warmup=o["warmup"], num_epochs=epochs, ipe_scale=o["ipe_scale"], use_bfloat16=False)
    ema = o["ema"]
    momentum_scheduler = (ema[0] + i * (ema[1] - ema[0]) / (ipe * epochs * o["ipe_scale"])
                          for i in range(int(ipe * epochs * o["ipe_scale"]) + 1))
    batches = []
    for _ in range(warmup + steps):
        (imgs, _), masks_enc, masks_pred = collator([(torch.randn(3, size, size), 0) for _ in range(batch)])
        batches.append((imgs, masks_enc, masks_pred))

    def train_step(imgs, masks_enc, masks_pred, update=True):  # train.py's closure, use_bfloat16 False
        if update:
            scheduler.step()
            wd_scheduler.step()
        with torch.no_grad():
            h = target_encoder(imgs)
            h = F.layer_norm(h, (h.size(-1),))
            h = apply_masks(h, masks_pred)
            h = repeat_interleave_batch(h, len(imgs), repeat=len(masks_enc))
        z = predictor(encoder(imgs, masks_enc), masks_enc, masks_pred)
        loss = AllReduce.apply(F.smooth_l1_loss(z, h))
        loss.backward()
        if update:
            optimizer.step()
        grad_logger(encoder.named_parameters())
        optimizer.zero_grad()
        if update:
            with torch.no_grad():
                mom = next(momentum_scheduler)
                for param_q, param_k in zip(encoder.parameters(), target_encoder.parameters()):
                    param_k.data.mul_(mom).add_((1. - mom) * param_q.detach().data)
        return float(loss)

    times, cpu = [], []
    for b in batches:
        start, start_cpu = time.perf_counter(), time.process_time()
        train_step(*b)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    flops = count_torch_flops(lambda: train_step(*batches[0], update=False))
    return dict(seconds=sum(times[warmup:]), cpu_seconds=sum(cpu[warmup:]), gflop_per_img=flops / batch / 1e9,
                context_tokens=int(batches[0][1][0].shape[1]), target_tokens=int(batches[0][2][0].shape[1]))


def run_worker(args):
    system, row = args.worker, args.row
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count()))
    if not system.startswith("mlx"):
        import torch
        torch.set_num_threads(threads)
    warmup, steps = args.warmup or STEPS[row][0], args.steps or STEPS[row][1]
    fn = {"mlx": worker_mlx, "hjepa": worker_hjepa, "ijepa": worker_ijepa,
          "mlx_gelu": lambda *a: worker_mlx(*a, overrides=["model.activation=gelu"]),
          "mlx_ijm": lambda *a: worker_mlx(*a, overrides=IJEPA_MASKS[row]),
          "mlx_nomallopt": worker_mlx,  # launched with MLX_HJEPA_NO_MALLOPT=1
          "mlx_onestream": worker_mlx,  # launched with MLX_HJEPA_CPU_STREAMS=1
          "mlx_nojitflags": worker_mlx,  # launched with MLX_HJEPA_NO_JIT_FLAGS=1
          "ijepa6": lambda *a: worker_ijepa(*a, pred_depth=6, pred_dim=min(384, ROWS[row][2]))}[system]
    out = fn(row, args.batch, warmup, steps, args.path)
    out.update(img_s=args.batch * steps / out["seconds"], cpu_ms_per_img=1e3 * out["cpu_seconds"] / (args.batch * steps),
               peak_rss_gib=peak_rss_gib(), versions=versions(system))
    print("RESULT " + json.dumps(out), flush=True)


def versions(system):
    if system.startswith("mlx"):
        import mlx.core as mx
        return {"mlx": mx.__version__}
    import torch
    return {"torch": torch.__version__}


# ---------------------------------------------------------------- driver
def launch(system, row, args, path):
    python = sys.executable if system.startswith("mlx") else args.torch_python
    env = dict(os.environ, **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                              "MKL_NUM_THREADS")})
    if system == "mlx_nomallopt":
        env["MLX_HJEPA_NO_MALLOPT"] = "1"
    if system == "mlx_nojitflags":
        env["MLX_HJEPA_NO_JIT_FLAGS"] = "1"
    # the step's second CPU stream is a second thread (_streams.py): with one thread each, one stream
    env["MLX_HJEPA_CPU_STREAMS"] = "1" if args.threads < 2 or system == "mlx_onestream" else "2"
    cmd = [python, str(Path(__file__).resolve()), "--worker", system, "--row", row, "--batch", str(args.batch),
           "--path", path or ""]
    cmd += ["--steps", str(args.steps)] if args.steps else []
    cmd += ["--warmup", str(args.warmup)] if args.warmup else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{system} at {row} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hjepa", help="checkout of the PyTorch H-JEPA project (github.com/jonwiggins/H-JEPA)")
    ap.add_argument("--ijepa", help="checkout of facebookresearch/ijepa")
    ap.add_argument("--torch-python", default=sys.executable, help="interpreter with torch, timm, einops, pyyaml")
    ap.add_argument("--rows", default="tiny96,small224", help=f"comma list of {', '.join(ROWS)}")
    ap.add_argument("--systems", default=None, help=f"comma list of {', '.join(SYSTEMS)} (default: mlx and "
                                                    "every peer whose checkout is given)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=None, help="timed steps per process (default 8 at Ti/96, 2 at S/224)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3 at Ti/96, 1 at S/224)")
    ap.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    ap.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return run_worker(args)

    paths = {**{s: None for s in SYSTEMS if s.startswith("mlx")},
             "hjepa": args.hjepa, "ijepa": args.ijepa, "ijepa6": args.ijepa}
    systems = args.systems.split(",") if args.systems else [s for s in SYSTEMS if s == "mlx" or paths[s]]
    rows = args.rows.split(",")
    bad = [s for s in systems if s not in SYSTEMS] + [r for r in rows if r not in ROWS]
    if bad:
        raise SystemExit(f"Unknown system or row {bad}; systems: {', '.join(SYSTEMS)}; rows: {', '.join(ROWS)}.")
    missing = [s for s in systems if not s.startswith("mlx") and not (paths[s] and Path(paths[s], "src").is_dir())]
    if missing:
        raise SystemExit(f"No checkout for {', '.join(missing)}: pass --hjepa / --ijepa with the path of a clone.")

    results = {}  # (row, system) -> [result per round]
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for row in rows:
            order = systems[r % len(systems):] + systems[:r % len(systems)]
            for system in order:
                res = launch(system, row, args, paths[system])
                results.setdefault((row, system), []).append(res)
                print(f"round {r + 1} {row:8} {system:6} {res['img_s']:7.2f} img/s", file=sys.stderr, flush=True)
    report(results, rows, systems, args, load_before, os.getloadavg())


def report(results, rows, systems, args, load_before, load_after):
    any_mlx = next(v for (_, s), v in results.items() if s.startswith("mlx"))[0]
    torch_v = next((v[0]["versions"]["torch"] for (_, s), v in results.items() if not s.startswith("mlx")), None)
    print(f"\nFull training step, fp32, batch {args.batch}, {args.threads} threads each, {args.rounds} interleaved "
          "rounds, one process per run")
    print(f"machine: {machine()}; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    torch_text = f", torch {torch_v} (eager, CPU)" if torch_v else ""
    print(f"versions: python {platform.python_version()}, mlx {any_mlx['versions']['mlx']}{torch_text}")
    print(f"mlx-hjepa activation: {any_mlx['activation']}\n")
    cols = ["row", "system", "img/s median", "img/s fastest", "CPU ms/img", "GFLOP/img", "GFLOP/s (median)",
            "peak RSS GiB"]
    table = []
    for row in rows:
        for s in systems:
            res = results[(row, s)]
            ips = [x["img_s"] for x in res]
            g = res[0]["gflop_per_img"]
            cpu = statistics.median(x["cpu_ms_per_img"] for x in res)
            table.append([ROWS[row][0], LABELS[s], f"{statistics.median(ips):.2f}", f"{max(ips):.2f}", f"{cpu:.0f}",
                          f"{g:.2f}",
                          f"{g * statistics.median(ips):.1f}", f"{max(x['peak_rss_gib'] for x in res):.2f}"])
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(cols))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for t in table:
        print(line(t))
    print()
    mine = [s for s in systems if s.startswith("mlx")]
    peers = [s for s in systems if not s.startswith("mlx")]
    for row in rows:
        for m in mine:
            for s in peers:
                ratios = [a["img_s"] / b["img_s"] for a, b in zip(results[(row, m)], results[(row, s)])]
                by_cpu = statistics.median(b["cpu_ms_per_img"] / a["cpu_ms_per_img"]
                                           for a, b in zip(results[(row, m)], results[(row, s)]))
                name = "mlx-hjepa" if m == "mlx" else m
                print(f"{ROWS[row][0]}: ratio {name}/{s}: {statistics.median(ratios):.2f} (median of per-round "
                      f"ratios; range {min(ratios):.2f}-{max(ratios):.2f}; by CPU time per image: {by_cpu:.2f})")


if __name__ == "__main__":
    main()

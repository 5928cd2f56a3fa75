"""The H-JEPA train step in MLX against the same step written in PyTorch, timed in one run.

The PyTorch step below does the same work as mlx_hjepa.train.step.TrainStep: same ViT
sizes (fused qkv, LayerNorm eps 1e-6, exact GELU, no cls token, fixed sin-cos
pos-embed), context encoder on the context tokens only, EMA target encoder on the full
image under no_grad, predictor with one batched pass over all target blocks, the
hierarchical smooth-L1 loss on the same numpy masks (MultiBlockMaskSampler), AdamW with
the same decay groups, the gradient norm and the EMA update. It starts from the MLX
model's weights, so the first losses of the two agree (printed as a check).

MLX and PyTorch blocks of steps alternate over several rounds and the median is
reported, so load from other processes on a shared machine hits both alike; the
ratio is the median of the per-round ratios. PyTorch runs with all cores
(torch.set_num_threads(os.cpu_count())) and, as a second column, with one thread: on
an oversubscribed machine OpenMP's barriers make 2 threads several times slower than 1.
Process CPU time per image is reported beside wall time. Then the MLX step is broken
down into its parts, each timed as its own compiled function, with the same part in
PyTorch beside it, and the transformer blocks inside those parts are split into op
classes (linears, attention core, GELU, layer norms) timed at the step's shapes.

    pip install torch==2.13.0                       # the `bench` extra; CPU build
    python benchmarks/vs_torch.py                   # ViT-T/16 @96 and ViT-S/16 @224, batch 32
    python benchmarks/vs_torch.py --quick           # ViT-T/16 @96, few steps
    python benchmarks/vs_torch.py --rows small224 --rounds 2
"""

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_model, header  # noqa: E402  (imports mlx_hjepa first: fast BLAS before mlx.core)

import mlx.core as mx  # noqa: E402
import mlx.nn as mnn  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten, tree_map  # noqa: E402

from mlx_hjepa.masks import MultiBlockMaskSampler  # noqa: E402
from mlx_hjepa.models import step_flops  # noqa: E402
from mlx_hjepa.models import vit as mlx_vit  # noqa: E402
from mlx_hjepa.models.vit import sincos_pos_embed_2d  # noqa: E402
from mlx_hjepa.objective import hierarchical_loss, window_counts  # noqa: E402
from mlx_hjepa.train.optimizer import AdamW as MlxAdamW  # noqa: E402
from mlx_hjepa.train.schedules import Schedules  # noqa: E402
from mlx_hjepa.models import normalize_images  # noqa: E402
from mlx_hjepa.rules import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from mlx_hjepa.train.step import StepOptions, TrainStep  # noqa: E402

try:
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F
except ImportError:
    raise SystemExit("PyTorch is not installed; install the bench extra (pip install -e '.[bench]', "
                     "or pip install torch) and run again.") from None

try:
    from mlx_hjepa._ops import fast_gelu
except ImportError:
    fast_gelu = None

LN_EPS = 1e-6
LEVEL_WEIGHTS = (1.0, 0.5, 0.25)
SCHEDULES = Schedules(1e-3, 2e-4, 1e-6, 10, 1000, 0.04, 0.4, 0.996, 1.0, 1000)


# ---------------------------------------------------------------- the step in PyTorch
class Attention(tnn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = tnn.Linear(dim, 3 * dim)
        self.proj = tnn.Linear(dim, dim)

    def forward(self, x):
        B, N, D = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, D))


class Mlp(tnn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = tnn.Linear(dim, hidden), tnn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU, as timm


class Block(tnn.Module):
    def __init__(self, dim, num_heads, mlp_ratio):
        super().__init__()
        self.norm1, self.norm2 = tnn.LayerNorm(dim, eps=LN_EPS), tnn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(tnn.Module):
    def __init__(self, patch_size, dim):
        super().__init__()
        self.proj = tnn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(tnn.Module):
    def __init__(self, img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio):
        super().__init__()
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.register_buffer("pos_embed", torch.from_numpy(sincos_pos_embed_2d(embed_dim, grid, grid)))
        self.blocks = tnn.ModuleList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = tnn.LayerNorm(embed_dim, eps=LN_EPS)

    def forward(self, images, token_indices=None):
        x = self.patch_embed(images) + self.pos_embed
        if token_indices is not None:
            x = gather_tokens(x, token_indices)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class Predictor(tnn.Module):
    def __init__(self, grid, encoder_dim, dim, depth, num_heads, mlp_ratio):
        super().__init__()
        self.predictor_embed = tnn.Linear(encoder_dim, dim)
        self.mask_token = tnn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", torch.from_numpy(sincos_pos_embed_2d(dim, *grid)))
        self.blocks = tnn.ModuleList([Block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.predictor_norm = tnn.LayerNorm(dim, eps=LN_EPS)
        self.predictor_proj = tnn.Linear(dim, encoder_dim)

    def forward(self, context, context_indices, target_indices):
        B, Kc, _ = context.shape
        _, M, Kt = target_indices.shape
        x = self.predictor_embed(context) + self.pos_embed[context_indices]
        x = x[:, None].expand(B, M, Kc, x.shape[-1]).reshape(B * M, Kc, -1)
        queries = self.mask_token + self.pos_embed[target_indices.reshape(B * M, Kt)]
        x = torch.cat([x, queries], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.predictor_proj(self.predictor_norm(x[:, Kc:])).reshape(B, M, Kt, -1)


class HJEPA(tnn.Module):
    def __init__(self, mlx_model):
        super().__init__()
        enc, pred = mlx_model.encoder, mlx_model.predictor
        enc_args = (enc.img_size, enc.patch_size, enc.embed_dim, enc.depth, enc.num_heads, enc.mlp_ratio)
        width = pred.predictor_embed.weight.shape[0]
        self.encoder = VisionTransformer(*enc_args)
        self.target_encoder = VisionTransformer(*enc_args).requires_grad_(False)
        self.predictor = Predictor(enc.grid_size, enc.embed_dim, width, len(pred.blocks),
                                   pred.blocks[0].attn.num_heads, enc.mlp_ratio)
        self.heads = tnn.ModuleList([tnn.Linear(enc.embed_dim, enc.embed_dim) for _ in mlx_model.heads])
        self.grid = enc.grid_size
        self.load_mlx_weights(mlx_model)

    def load_mlx_weights(self, mlx_model):
        """Same names as the MLX model; MLX convolutions are (out, kh, kw, in), torch's (out, in, kh, kw)."""
        weights = {k: np.array(v) for k, v in tree_flatten(mlx_model.parameters())}
        state = {k: torch.from_numpy(v.transpose(0, 3, 1, 2).copy() if v.ndim == 4 else v)
                 for k, v in weights.items()}
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("pos_embed")]
        if missing or unexpected:
            raise RuntimeError(f"MLX -> torch weight names differ: missing {missing}, unexpected {unexpected}")


def gather_tokens(tokens, indices):
    """tokens (B, N, D), indices (B, ...) -> (B, ..., D)."""
    B, D = tokens.shape[0], tokens.shape[-1]
    flat = indices.reshape(B, -1)
    return torch.gather(tokens, 1, flat[..., None].expand(-1, -1, D)).reshape(*indices.shape, D)


def pool_grid(tokens, grid, s):
    if s == 1:
        return tokens
    B, _, D = tokens.shape
    H, W = grid
    Hl, Wl = math.ceil(H / s), math.ceil(W / s)
    x = F.pad(tokens.reshape(B, H, W, D), (0, 0, 0, Wl * s - W, 0, Hl * s - H))
    x = x.reshape(B, Hl, s, Wl, s, D).sum(dim=(2, 4))
    counts = torch.from_numpy(window_counts(grid, s)).to(x.dtype)  # patches per window, edge windows partial
    return (x / counts[None, :, :, None]).reshape(B, Hl * Wl, D)


def hierarchical_loss_torch(predictions, target_tokens, masks, heads, grid):
    total = 0.0
    for level, (head, weight) in enumerate(zip(heads, LEVEL_WEIGHTS)):
        if level == 0:
            pred = predictions
            target = gather_tokens(F.layer_norm(target_tokens, target_tokens.shape[-1:], eps=LN_EPS),
                                   masks["targets"])
        else:
            idx, w = masks[f"pool_idx_{level}"], masks[f"pool_w_{level}"]
            B, M, Wn, S = idx.shape
            D = predictions.shape[-1]
            members = torch.gather(predictions, 2, idx.reshape(B, M, Wn * S)[..., None].expand(-1, -1, -1, D))
            pred = (members.reshape(B, M, Wn, S, D) * w[..., None]).sum(dim=3)
            pooled = pool_grid(target_tokens, grid, 2**level)
            target = gather_tokens(F.layer_norm(pooled, pooled.shape[-1:], eps=LN_EPS), masks[f"win_idx_{level}"])
        per_position = F.smooth_l1_loss(head(pred), target, reduction="none", beta=1.0).mean(dim=-1)
        if level == 0:
            loss = per_position.mean()
        else:
            valid = masks[f"win_valid_{level}"]
            loss = ((per_position * valid).sum(dim=(1, 2)) / valid.sum(dim=(1, 2)).clamp(min=1.0)).mean()
        total = total + weight * loss
    return total


def normalize_images_torch(images_uint8):
    x = images_uint8.float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    return x.permute(0, 3, 1, 2)  # NCHW for Conv2d


class TorchStep:
    """AdamW (no decay on biases, norms and 1-D parameters, as mlx_hjepa's), grad norm, EMA."""

    def __init__(self, model, total_steps):
        self.model = model
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        no_decay = lambda n, p: p.ndim <= 1 or n.endswith("bias") or "norm" in n
        self.optimizer = torch.optim.AdamW([
            {"params": [p for n, p in named if not no_decay(n, p)], "decay": True},
            {"params": [p for n, p in named if no_decay(n, p)], "decay": False, "weight_decay": 0.0},
        ], lr=SCHEDULES.warmup_lr)
        # the schedules' values per step, computed up front (MLX computes them inside its compiled step)
        steps = mx.arange(total_steps)
        self.schedule = np.array(mx.stack([SCHEDULES.learning_rate(steps), SCHEDULES.weight_decay_at(steps),
                                           SCHEDULES.ema_momentum(steps)], axis=1)).tolist()
        self.context_params = list(model.encoder.parameters())
        self.target_params = list(model.target_encoder.parameters())
        self.step = 0

    def __call__(self, images, masks):
        lr, wd, momentum = self.schedule[min(self.step, len(self.schedule) - 1)]
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if group["decay"]:
                group["weight_decay"] = wd
        model = self.model
        x = normalize_images_torch(images)
        with torch.no_grad():
            target_tokens = model.target_encoder(x)
        context = model.encoder(x, masks["context"])
        predictions = model.predictor(context, masks["context"], masks["targets"])
        loss = hierarchical_loss_torch(predictions, target_tokens, masks, model.heads, model.grid)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(
            [p.grad for g in self.optimizer.param_groups for p in g["params"]])))
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_mul_(self.target_params, momentum)
            torch._foreach_add_(self.target_params, self.context_params, alpha=1.0 - momentum)
        self.step += 1
        return loss.detach(), grad_norm


def torch_masks(masks):
    return {k: torch.from_numpy(v.astype(np.int64) if v.dtype.kind == "i" else v)
            for k, v in masks.items() if not k.endswith("_boxes")}


# ---------------------------------------------------------------- timing helpers
def timed(fn, sync):
    start = time.perf_counter()
    sync(fn())
    return time.perf_counter() - start


def timed_cpu(fn, sync):
    """(wall seconds, CPU seconds of this process: every thread, spinning included)."""
    start, cpu = time.perf_counter(), time.process_time()
    sync(fn())
    return time.perf_counter() - start, time.process_time() - cpu


def mlx_sync(out):
    mx.eval(out)


def torch_sync(out):
    return out


def build_row(name, img_size, batch, act="gelu"):
    model = bench_model(name, img_size, act, levels=3)
    mx.eval(model.parameters())
    sampler = MultiBlockMaskSampler(model.grid_size, num_hierarchies=3)
    masks = sampler(batch, 0, 0)  # one mask shape for every step: steady state, no retracing
    images = np.random.default_rng(0).integers(0, 256, (batch, img_size, img_size, 3), dtype=np.uint8)
    return model, masks, images


def compare_row(label, name, img_size, batch, steps, rounds, extra_acts, torch_threads):
    """Interleaved blocks of `steps` steps: each MLX variant, then PyTorch at each thread count, per round.
    Returns table rows, the torch thread count that ran fastest, and what the breakdown needs."""
    model, masks, images = build_row(name, img_size, batch)
    torch_model = HJEPA(model)  # weights copied before any MLX step changes them
    mlx_steps = {"gelu": TrainStep(model, SCHEDULES, StepOptions(hierarchy_weights=LEVEL_WEIGHTS))}
    for act in extra_acts:  # the same model built with another activation, same init
        other, _, _ = build_row(name, img_size, batch, act=act)
        mlx_steps[act] = TrainStep(other, SCHEDULES, StepOptions(hierarchy_weights=LEVEL_WEIGHTS))
    torch_step = TorchStep(torch_model, total_steps=(rounds * len(torch_threads) + 1) * steps + 1)
    mx_images, mx_masks = mx.array(images), {k: mx.array(v) for k, v in masks.items() if not k.endswith("_boxes")}
    t_images, t_masks = torch.from_numpy(images), torch_masks(masks)

    # warm-up (traces and JIT-compiles the MLX step); first losses from identical weights and inputs
    first = {act: float(step(mx_images, mx_masks)["loss"].item()) for act, step in mlx_steps.items()}
    torch.set_num_threads(torch_threads[-1])
    first["torch"] = float(torch_step(t_images, t_masks)[0])

    run_mlx = lambda step: lambda: [step(mx_images, mx_masks) for _ in range(steps)]
    run_torch = lambda: [torch_step(t_images, t_masks) for _ in range(steps)]
    times = {act: [] for act in mlx_steps} | {n: [] for n in torch_threads}
    for _ in range(rounds):
        for act, step in mlx_steps.items():
            times[act].append(timed_cpu(run_mlx(step), mlx_sync))
        for n in torch_threads:
            torch.set_num_threads(n)
            times[n].append(timed_cpu(run_torch, torch_sync))
    print(f"{label}, per round (wall s, CPU s) of each block of {steps} steps: " + "; ".join(
        f"{k if isinstance(k, str) else f'torch {k} thr'}: " + ", ".join(f"({w:.1f}, {c:.1f})" for w, c in v)
        for k, v in times.items()), flush=True)

    Kc, (M, Kt) = masks["context"].shape[1], masks["targets"].shape[1:]
    gflop = step_flops(model.config(), Kc, M, Kt) / 1e9
    ips = lambda key: statistics.median(batch * steps / w for w, _ in times[key])
    cpu_ms = lambda key: statistics.median(c / (batch * steps) * 1e3 for _, c in times[key])
    ratio = lambda act, n, i: statistics.median(t[i] / m[i] for m, t in zip(times[act], times[n]))
    rows = []
    for act in mlx_steps:
        rows.append(dict(
            label=label if act == "gelu" else f"{label}, MLX with fast_gelu (not exact GELU)", steps=steps,
            mlx=ips(act), mlx_cpu=cpu_ms(act), torch={n: ips(n) for n in torch_threads},
            torch_cpu={n: cpu_ms(n) for n in torch_threads}, ratio={n: ratio(act, n, 0) for n in torch_threads},
            cpu_ratio={n: ratio(act, n, 1) for n in torch_threads}, gflop=gflop, loss_mlx=first[act],
            loss_torch=first["torch"], Kc=Kc, M=M, Kt=Kt))
    fastest = max(torch_threads, key=ips)
    whole_step = {"mlx": lambda: mlx_steps["gelu"](mx_images, mx_masks), "torch": lambda: torch_step(t_images, t_masks)}
    return rows, fastest, (model, torch_model, masks, images, whole_step)


# ---------------------------------------------------------------- per-component breakdown
def mlx_components(model, masks, images):
    """Each part of the MLX step as its own compiled function of the model state."""
    x = normalize_images(mx.array(images))
    mm = {k: mx.array(v) for k, v in masks.items() if not k.endswith("_boxes")}
    images = mx.array(images)
    target_tokens = model.target_encoder(x)
    context = model.encoder(x, mm["context"])
    predictions = model.predictor(context, mm["context"], mm["targets"])
    cot_context, cot_pred = mx.random.normal(context.shape), mx.random.normal(predictions.shape)
    mx.eval(target_tokens, context, predictions, cot_context, cot_pred)

    def target_forward():
        return model.target_encoder(normalize_images(images))

    def grads_of(module, loss, *extra):
        """Gradients of loss(params, *extra) w.r.t. the module's parameters (and extra), as in the step."""
        params = module.trainable_parameters()
        grads = mx.grad(loss, argnums=tuple(range(1 + len(extra))))(params, *extra)
        module.update(params)
        return grads

    def context_fwd_bwd():
        def loss(params):
            model.encoder.update(params)
            return (model.encoder(x, mm["context"]) * cot_context).sum()
        return grads_of(model.encoder, loss)

    def predictor_fwd_bwd():
        def loss(params, ctx):
            model.predictor.update(params)
            return (model.predictor(ctx, mm["context"], mm["targets"]) * cot_pred).sum()
        return grads_of(model.predictor, loss, context)

    def loss_fwd_bwd():
        heads = mnn.Module()
        heads.heads = model.heads

        def loss(params, pred):
            heads.update(params)
            return hierarchical_loss(pred, target_tokens, mm, heads.heads, model.grid_size, LEVEL_WEIGHTS)[0]
        return grads_of(heads, loss, predictions)

    optimizer = MlxAdamW(model.trainable_parameters())
    grads = tree_map(lambda p: mx.random.normal(p.shape) * 1e-3, model.trainable_parameters())
    mx.eval(grads, optimizer.state)
    lr, wd, momentum = mx.array(2e-4), mx.array(0.04), mx.array(0.996)

    def adamw_ema():
        model.update(optimizer.update(model.trainable_parameters(), grads, lr, wd))
        model.ema_update(momentum)
        return model.state

    state = [model.state, optimizer.state]
    return {
        "target encoder fwd (full image)": mx.compile(target_forward, inputs=state),
        "context encoder fwd+bwd": mx.compile(context_fwd_bwd, inputs=state),
        "predictor fwd+bwd": mx.compile(predictor_fwd_bwd, inputs=state),
        "loss fwd+bwd (3 levels, heads)": mx.compile(loss_fwd_bwd, inputs=state),
        "AdamW + EMA update": mx.compile(adamw_ema, inputs=state, outputs=state),
    }


def torch_components(model, masks, images):
    tm = torch_masks(masks)
    images = torch.from_numpy(images)
    x = normalize_images_torch(images)
    with torch.no_grad():
        target_tokens = model.target_encoder(x)
        context = model.encoder(x, tm["context"])
        predictions = model.predictor(context, tm["context"], tm["targets"])
    cot_context, cot_pred = torch.randn_like(context), torch.randn_like(predictions)
    context, predictions = context.requires_grad_(), predictions.requires_grad_()
    step = TorchStep(model, total_steps=1)
    for p in step.optimizer.param_groups[0]["params"] + step.optimizer.param_groups[1]["params"]:
        p.grad = torch.randn_like(p) * 1e-3

    def target_forward():
        with torch.no_grad():
            return model.target_encoder(normalize_images_torch(images))

    def context_fwd_bwd():
        model.encoder(x, tm["context"]).backward(cot_context)

    def predictor_fwd_bwd():
        model.predictor(context, tm["context"], tm["targets"]).backward(cot_pred)

    def loss_fwd_bwd():
        hierarchical_loss_torch(predictions, target_tokens, tm, model.heads, model.grid).backward()

    def adamw_ema():
        step.optimizer.step()
        with torch.no_grad():
            torch._foreach_mul_(step.target_params, 0.996)
            torch._foreach_add_(step.target_params, step.context_params, alpha=0.004)

    return {"target encoder fwd (full image)": target_forward, "context encoder fwd+bwd": context_fwd_bwd,
            "predictor fwd+bwd": predictor_fwd_bwd, "loss fwd+bwd (3 levels, heads)": loss_fwd_bwd,
            "AdamW + EMA update": adamw_ema}


def breakdown(model, torch_model, masks, images, whole_step, rounds):
    """Fastest-round seconds of each part and of the whole step, MLX and torch interleaved (the fastest round
    is the least disturbed by other processes); run after the step timings (the parts move the weights)."""
    mlx_parts, torch_parts = mlx_components(model, masks, images), torch_components(torch_model, masks, images)
    mlx_parts["whole step"], torch_parts["whole step"] = whole_step["mlx"], whole_step["torch"]
    for fn in mlx_parts.values():
        mx.eval(fn())
    for fn in torch_parts.values():
        fn()
    times = {(part, fw): [] for part in mlx_parts for fw in ("mlx", "torch")}
    for _ in range(rounds):
        for part in mlx_parts:
            times[(part, "mlx")].append(timed(mlx_parts[part], mlx_sync))
            times[(part, "torch")].append(timed(torch_parts[part], torch_sync))
    return {key: min(t) for key, t in times.items()}


# ---------------------------------------------------------------- op classes inside the blocks
def block_shapes(model, masks, batch):
    """(part, sequences, tokens, width, heads, depth, backward) of every transformer stack in the step."""
    enc, pred = model.encoder, model.predictor
    Kc, (M, Kt) = masks["context"].shape[1], masks["targets"].shape[1:]
    pw, ph = pred.predictor_embed.weight.shape[0], pred.blocks[0].attn.num_heads
    return [("target fwd", batch, enc.num_patches, enc.embed_dim, enc.num_heads, enc.depth, False),
            ("context fwd+bwd", batch, Kc, enc.embed_dim, enc.num_heads, enc.depth, True),
            ("predictor fwd+bwd", batch * M, Kc + Kt, pw, ph, len(pred.blocks), True)]


def op_functions_mlx(seqs, tokens, dim, heads, backward):
    """One block's op classes at this shape, compiled; fwd or fwd+bwd (grads w.r.t. inputs and weights)."""
    hidden = 4 * dim
    x, h = mx.random.normal((seqs, tokens, dim)), mx.random.normal((seqs, tokens, hidden))
    qkv = mx.random.normal((seqs, tokens, 3 * dim))
    w = {n: mx.random.normal(s) * 0.02 for n, s in
         [("qkv", (3 * dim, dim)), ("proj", (dim, dim)), ("fc1", (hidden, dim)), ("fc2", (dim, hidden))]}
    ln_w, ln_b = mx.ones((dim,)), mx.zeros((dim,))
    mx.eval(x, h, qkv, w)

    def attention(t):
        B, N, _ = t.shape
        q, k, v = t.reshape(B, N, 3, heads, dim // heads).transpose(2, 0, 3, 1, 4)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=(dim // heads) ** -0.5)
        return out.transpose(0, 2, 1, 3).reshape(B, N, dim)

    ops = {
        "linears (qkv, proj, fc1, fc2)": (lambda t, w: (t @ w["qkv"].T).sum() + (t @ w["proj"].T).sum()
                                          + ((t @ w["fc1"].T) @ w["fc2"].T).sum(), (x, w)),
        "attention core (sdpa, head reshapes)": (lambda t: attention(t).sum(), (qkv,)),
        "GELU": (lambda t: mnn.gelu(t).sum(), (h,)),
        "2 layernorms": (lambda t, a, b: mx.fast.layer_norm(mx.fast.layer_norm(t, a, b, LN_EPS), a, b, LN_EPS).sum(),
                         (x, ln_w, ln_b)),
    }
    if fast_gelu is not None:
        ops["GELU as _ops.fast_gelu (PyTorch: exact)"] = (lambda t: fast_gelu(t).sum(), (h,))
    out = {}
    for name, (fn, args) in ops.items():
        f = mx.grad(fn, argnums=tuple(range(len(args)))) if backward else fn
        out[name] = (lambda f=mx.compile(f), args=args: f(*args))
    return out


def op_functions_torch(seqs, tokens, dim, heads, backward):
    hidden = 4 * dim
    x, h = torch.randn(seqs, tokens, dim), torch.randn(seqs, tokens, hidden)
    qkv = torch.randn(seqs, tokens, 3 * dim)
    ws = [torch.randn(s) * 0.02 for s in [(3 * dim, dim), (dim, dim), (hidden, dim), (dim, hidden)]]
    ln_w, ln_b = torch.ones(dim), torch.zeros(dim)
    leaves = [x, h, qkv, ln_w, ln_b, *ws]
    for t in leaves:
        t.requires_grad_(backward)

    def attention(t):
        B, N, _ = t.shape
        q, k, v = t.reshape(B, N, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, dim)

    ops = {
        "linears (qkv, proj, fc1, fc2)": lambda: (x @ ws[0].T).sum() + (x @ ws[1].T).sum()
        + ((x @ ws[2].T) @ ws[3].T).sum(),
        "attention core (sdpa, head reshapes)": lambda: attention(qkv).sum(),
        "GELU": lambda: F.gelu(h).sum(),
        "GELU as _ops.fast_gelu (PyTorch: exact)": lambda: F.gelu(h).sum(),
        "2 layernorms": lambda: F.layer_norm(F.layer_norm(x, (dim,), ln_w, ln_b, LN_EPS), (dim,), ln_w, ln_b,
                                             LN_EPS).sum(),
    }

    def run(fn):
        if not backward:
            with torch.no_grad():
                return fn()
        for t in leaves:
            t.grad = None
        fn().backward()
    return {name: (lambda fn=fn: run(fn)) for name, fn in ops.items()}


def op_breakdown(model, masks, batch, rounds):
    """Seconds per step of each op class, summed over the step's transformer stacks (x depth)."""
    totals = {}
    for part, seqs, tokens, dim, heads, depth, backward in block_shapes(model, masks, batch):
        mlx_ops = op_functions_mlx(seqs, tokens, dim, heads, backward)
        torch_ops = op_functions_torch(seqs, tokens, dim, heads, backward)
        for name in mlx_ops:
            mx.eval(mlx_ops[name]())
            torch_ops[name]()
            mlx_t, torch_t = [], []
            for _ in range(rounds):
                mlx_t.append(timed(mlx_ops[name], mlx_sync))
                torch_t.append(timed(torch_ops[name], torch_sync))
            for fw, t in (("mlx", mlx_t), ("torch", torch_t)):
                totals.setdefault((name, fw), {})[part] = depth * min(t)
    return totals


# ---------------------------------------------------------------- report
def print_results(rows, parts, ops, batch, rounds, torch_threads):
    print(f"\nH-JEPA train step, MLX vs PyTorch (fp32, batch {batch}, predictor min(384, width) x 6, 3 levels)")
    print(header())
    print(f"torch {torch.__version__}, eager, torch.set_num_threads({' and '.join(map(str, torch_threads))}); "
          f"MLX step compiled (mlx_hjepa.train.step.TrainStep). {rounds} rounds; in each, one block of steps of "
          "every column in turn. img/s and CPU ms/img (process CPU time, all threads, spinning included) are "
          "medians over rounds; ratios are medians of per-round ratios, so load from other processes on a "
          "shared machine hits both sides alike.\n")
    cols = ["row", "steps/block", "img/s MLX"] + [f"img/s PyTorch {n} thr" for n in torch_threads]
    cols += ["CPU ms/img MLX"] + [f"CPU ms/img PyTorch {n} thr" for n in torch_threads]
    cols += ["GFLOP/img", "masks Kc, MxKt", "loss step 0 MLX / PyTorch"]
    table = [[r["label"], str(r["steps"]), f"{r['mlx']:.2f}"] + [f"{r['torch'][n]:.2f}" for n in torch_threads]
             + [f"{r['mlx_cpu']:.0f}"] + [f"{r['torch_cpu'][n]:.0f}" for n in torch_threads]
             + [f"{r['gflop']:.2f}", f"{r['Kc']}, {r['M']}x{r['Kt']}", f"{r['loss_mlx']:.5f} / {r['loss_torch']:.5f}"]
             for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(cols))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for t in table:
        print(line(t))
    print()
    for r in rows:
        n = torch_threads[0]
        others = "".join(f"; against PyTorch {m} thr: {r['ratio'][m]:.2f}" for m in torch_threads[1:])
        cpu = ", ".join(f"{m} thr {r['cpu_ratio'][m]:.2f}" for m in torch_threads)
        print(f"{r['label']}: ratio MLX/PyTorch: {r['ratio'][n]:.2f}   (PyTorch {n} thr{others}; "
              f"by CPU time: {cpu})")

    for label, (threads, part_times) in parts.items():
        print(f"\nPer-component breakdown, {label} (ms per step). Method: each part is its own function "
              "(mx.compile'd, taking the model state as input) on the step's real shapes and masks, timed alone "
              f"with the same part in PyTorch ({threads} thr, its faster setting above) beside it and the whole "
              "step in the same rounds, fastest of the rounds (least disturbed by other load); "
              "backward parts differentiate a fixed random cotangent. 'rest' = whole step - sum of parts (what the "
              "split leaves out: grad norm, metrics, fusion across part boundaries; negative = noise or fusion "
              "the parts alone miss).")
        print(f"| {'part':<34} | {'MLX ms':>9} | {'% of MLX step':>13} | {'PyTorch ms':>10} | "
              f"{'MLX/PyTorch time':>16} |")
        print(f"|{'-' * 36}|{'-' * 11}|{'-' * 15}|{'-' * 12}|{'-' * 18}|")
        names = [p for p in dict.fromkeys(p for p, _ in part_times) if p != "whole step"]
        step_ms = {fw: part_times[("whole step", fw)] * 1e3 for fw in ("mlx", "torch")}
        for p in names:
            m, t = part_times[(p, "mlx")] * 1e3, part_times[(p, "torch")] * 1e3
            print(f"| {p:<34} | {m:9.0f} | {100 * m / step_ms['mlx']:12.0f}% | {t:10.0f} | {m / t:16.2f} |")
        rest = {fw: step_ms[fw] - sum(part_times[(p, fw)] * 1e3 for p in names) for fw in ("mlx", "torch")}
        print(f"| {'rest':<34} | {rest['mlx']:9.0f} | {100 * rest['mlx'] / step_ms['mlx']:12.0f}% | "
              f"{rest['torch']:10.0f} | {'':>16} |")
        print(f"| {'whole step':<34} | {step_ms['mlx']:9.0f} | {100:12.0f}% | {step_ms['torch']:10.0f} | "
              f"{step_ms['mlx'] / step_ms['torch']:16.2f} |")

    for label, (threads, op_times) in ops.items():
        print(f"\nOp classes inside the transformer blocks, {label} (ms per step, summed over target fwd, context "
              "fwd+bwd and predictor fwd+bwd, one block's ops timed alone at that stack's shape x depth, fastest of "
              "the rounds; MLX compiled; "
              f"PyTorch {threads} thr). "
              "'gap' = MLX - PyTorch: what each op class costs MLX beyond PyTorch.")
        stacks = list(next(iter(op_times.values())).keys())
        print("| op class | " + " | ".join(f"MLX {s}" for s in stacks) + " | MLX total | PyTorch total | gap |")
        print("|---" * (len(stacks) + 4) + "|")
        names = list(dict.fromkeys(n for n, _ in op_times))
        for n in names:
            m, t = op_times[(n, "mlx")], op_times[(n, "torch")]
            mt, tt = sum(m.values()) * 1e3, sum(t.values()) * 1e3
            print(f"| {n} | " + " | ".join(f"{m[s] * 1e3:.0f}" for s in stacks) + f" | {mt:.0f} | {tt:.0f} | "
                  f"{mt - tt:+.0f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="ViT-T/16 @96 only, few steps")
    ap.add_argument("--steps", type=int, default=None,
                    help="steps per timed block (default 8 at ViT-T @96, 1 at ViT-S @224; --quick 4)")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                    help="torch.set_num_threads for the main PyTorch column (default: all cores); 1 thread is "
                         "timed too (on a loaded machine OpenMP's 2-thread barriers can be far slower)")
    ap.add_argument("--rows", default=None, help="comma list of tiny96, small224 (default both; --quick tiny96)")
    ap.add_argument("--no-breakdown", action="store_true", help="only the step timings")
    args = ap.parse_args()
    rounds = args.rounds or 3
    torch_threads = [args.torch_threads] + ([1] if args.torch_threads > 1 else [])
    extra_acts = []
    if fast_gelu is not None:
        mlx_vit.ACTIVATION_FNS.setdefault("fast_gelu", fast_gelu)
        extra_acts = ["fast_gelu"]
    all_specs = {"tiny96": ("ViT-T/16 @96", "vit_tiny", 96, 4 if args.quick else 8),
                 "small224": ("ViT-S/16 @224", "vit_small", 224, 1)}
    chosen = args.rows.split(",") if args.rows else (["tiny96"] if args.quick else list(all_specs))
    unknown = [r for r in chosen if r not in all_specs]
    if unknown:
        raise SystemExit(f"Unknown row(s) {unknown}; use a comma list of {', '.join(all_specs)}.")

    rows, parts, ops = [], {}, {}
    for key in chosen:
        label, name, size, steps = all_specs[key]
        steps = args.steps or steps
        row, fastest, (model, torch_model, masks, images, whole_step) = compare_row(
            label, name, size, args.batch, steps, rounds, extra_acts, torch_threads)
        rows += row
        if not args.no_breakdown:
            torch.set_num_threads(fastest)
            parts[label] = (fastest, breakdown(model, torch_model, masks, images, whole_step, rounds))
            ops[label] = (fastest, op_breakdown(model, masks, args.batch, rounds))
    print_results(rows, parts, ops, args.batch, rounds, torch_threads)


if __name__ == "__main__":
    main()

"""Per-component cost of a ViT-S/16 @ 224 block on MLX's CPU backend (fp32, forward+backward).

Compares exact GELU, MLX's tanh GELU and mlx_hjepa._ops.fast_gelu; fused attention
(mx.fast.scaled_dot_product_attention) and naive attention; each with and without
mx.compile; and one whole block with the default and the cheap choices. Variants are
interleaved over rounds and the fastest round is reported (the machine may be shared).

    python benchmarks/cpu_ops.py              # batch 32, 3 rounds
    python benchmarks/cpu_ops.py --batch 8 --rounds 5
    python benchmarks/cpu_ops.py --model      # also the project's whole ViT-S/16 encoder (slow)
"""

import argparse
import time

import mlx_hjepa  # noqa: F401  (first: preloads the fast BLAS)
import mlx.core as mx
import mlx.nn as nn

from mlx_hjepa import info
from mlx_hjepa._ops import fast_gelu

DIM, HEADS, TOKENS, MLP_RATIO = 384, 6, 196, 4  # ViT-S/16 @ 224


def sdpa(q, k, v, scale):
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale)


def naive_attention(q, k, v, scale):
    weights = mx.softmax((q * scale) @ k.swapaxes(-1, -2), axis=-1)
    return weights @ v


def attention_from_qkv(qkv, attend):
    B, N, _ = qkv.shape
    q, k, v = qkv.reshape(B, N, 3, HEADS, DIM // HEADS).transpose(2, 0, 3, 1, 4)
    out = attend(q, k, v, (DIM // HEADS) ** -0.5)
    return out.transpose(0, 2, 1, 3).reshape(B, N, DIM)


class Block(nn.Module):
    def __init__(self, act, attend):
        super().__init__()
        self.act, self.attend = act, attend
        self.norm1, self.norm2 = nn.LayerNorm(DIM, eps=1e-6), nn.LayerNorm(DIM, eps=1e-6)
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        self.fc1, self.fc2 = nn.Linear(DIM, MLP_RATIO * DIM), nn.Linear(MLP_RATIO * DIM, DIM)

    def __call__(self, x):
        x = x + self.proj(attention_from_qkv(self.qkv(self.norm1(x)), self.attend))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


def forward_backward(fn, *inputs):
    """fwd+bwd of fn with fixed random cotangents: outputs and gradients for every input."""
    def as_list(outputs):
        return list(outputs) if isinstance(outputs, tuple) else [outputs]

    cotangents = [mx.random.normal(o.shape) for o in as_list(fn(*inputs))]
    mx.eval(cotangents)
    return lambda: mx.vjp(lambda *a: as_list(fn(*a)), list(inputs), cotangents)


def block_step(block, x):
    cotangent = mx.random.normal(x.shape)
    loss_and_grad = nn.value_and_grad(block, lambda x: (block(x) * cotangent).sum())
    return lambda: loss_and_grad(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", action="store_true", help="also time the whole ViT-S/16 encoder")
    args = parser.parse_args()

    B = args.batch
    hidden = mx.random.normal((B, TOKENS, MLP_RATIO * DIM))
    qkv = mx.random.normal((B, TOKENS, 3 * DIM))
    x = mx.random.normal((B, TOKENS, DIM))
    mx.eval(hidden, qkv, x)

    variants = {}
    for name, act in [("exact nn.gelu", nn.gelu), ("tanh nn.gelu_approx", nn.gelu_approx), ("fast_gelu", fast_gelu)]:
        variants[("GELU", name)] = forward_backward(act, hidden)
    for name, attend in [("fast sdpa", sdpa), ("naive", naive_attention)]:
        variants[("attention", name)] = forward_backward(lambda t, a=attend: attention_from_qkv(t, a), qkv)
    w, b = mx.ones((DIM,)), mx.zeros((DIM,))
    variants[("layernorm", "2 per block")] = forward_backward(
        lambda t, w, b: mx.fast.layer_norm(mx.fast.layer_norm(t, w, b, 1e-6), w, b, 1e-6), x, w, b
    )
    weights = [mx.random.normal((n, DIM)) * 0.02 for n in (3 * DIM, DIM, MLP_RATIO * DIM)]
    weights.append(mx.random.normal((DIM, MLP_RATIO * DIM)) * 0.02)
    variants[("linears", "qkv,proj,fc1,fc2")] = forward_backward(
        lambda t, wq, wp, w1, w2: (t @ wq.T, t @ wp.T, (t @ w1.T) @ w2.T), x, *weights
    )
    for name, act in [("exact gelu + sdpa", nn.gelu), ("fast_gelu + sdpa", fast_gelu)]:
        block = Block(act, sdpa)
        mx.eval(block.parameters())
        variants[("block", name)] = block_step(block, x)

    if args.model:  # the project's encoder, 12 blocks, with the activation swapped in by name
        from mlx_hjepa.models import vit
        from mlx_hjepa.rules import encoder_config

        vit.ACTIVATION_FNS.setdefault("fast_gelu", fast_gelu)
        images = mx.random.normal((B, 224, 224, 3))
        for name, act in [("exact gelu", "gelu"), ("fast_gelu", "fast_gelu")]:
            encoder = vit.VisionTransformer(**encoder_config("vit_small", 224, act=act))
            mx.eval(encoder.parameters())
            loss_and_grad = nn.value_and_grad(encoder, lambda x, e=encoder: (e(x) ** 2).mean())
            variants[("ViT-S enc", name)] = lambda f=loss_and_grad: f(images)

    runs = {}
    for (component, name), fn in variants.items():
        runs[(component, name, "eager")] = fn
        runs[(component, name, "compiled")] = mx.compile(fn)
    for fn in runs.values():  # warm-up: traces and JIT-compiles kernels
        mx.eval(fn())
    best = {key: float("inf") for key in runs}
    for _ in range(args.rounds):
        for key, fn in runs.items():
            start = time.perf_counter()
            mx.eval(fn())
            best[key] = min(best[key], time.perf_counter() - start)

    machine = info.collect(measure=False)
    print(f"machine: {machine['platform']}, {machine['cpu']}, {machine['cpu_cores']} cores")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()))
    print(f"blas: {machine['blas']['library']}")
    print(f"ViT-S/16 @ 224 shapes, batch {B}, fp32, forward+backward, best of {args.rounds} rounds (ms)\n")
    print(f"| {'component':<10} | {'variant':<22} | {'eager':>8} | {'compiled':>8} |")
    print(f"|{'-' * 12}|{'-' * 24}|{'-' * 10}|{'-' * 10}|")
    for component, name in variants:
        eager, compiled = (best[(component, name, mode)] * 1e3 for mode in ("eager", "compiled"))
        print(f"| {component:<10} | {name:<22} | {eager:8.1f} | {compiled:8.1f} |")


if __name__ == "__main__":
    main()

"""MLX CPU speed with the OpenBLAS preload vs the wheel's bundled reference BLAS, in one run.

Each variant runs in its own interpreter (the preload only acts before mlx.core loads):
fp32 sgemm GFLOP/s at 1024 and the forward+backward time of a plain ViT (timm layout, no
optimizer) at batch 32.

    python benchmarks/blas.py                       # ViT-Ti/16 @ 96
    python benchmarks/blas.py --dim 384 --heads 6 --img 224 --steps 2   # ViT-S/16 @ 224
"""

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {"preload (default)": {}, "no preload (reference BLAS)": {"MLX_HJEPA_NO_BLAS_PRELOAD": "1"}}


def worker(args):
    import mlx_hjepa  # noqa: F401  (first: preloads the BLAS unless disabled)
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_hjepa import _blas, info

    class Block(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.heads = heads
            self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

        def __call__(self, x):
            B, N, D = x.shape
            q, k, v = self.qkv(self.norm1(x)).reshape(B, N, 3, self.heads, -1).transpose(2, 0, 3, 1, 4)
            a = mx.fast.scaled_dot_product_attention(q, k, v, scale=(D // self.heads) ** -0.5)
            x = x + self.proj(a.transpose(0, 2, 1, 3).reshape(B, N, D))
            return x + self.fc2(nn.gelu(self.fc1(self.norm2(x))))

    class ViT(nn.Module):
        def __init__(self, dim, depth, heads, patch):
            super().__init__()
            self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
            self.blocks = [Block(dim, heads) for _ in range(depth)]
            self.norm = nn.LayerNorm(dim, eps=1e-6)

        def __call__(self, x):
            x = self.patch_embed(x)
            x = x.reshape(x.shape[0], -1, x.shape[-1])
            for block in self.blocks:
                x = block(x)
            return self.norm(x)

    model = ViT(args.dim, args.depth, args.heads, args.patch)
    images = mx.random.normal((args.batch, args.img, args.img, 3))
    loss_and_grad = nn.value_and_grad(model, lambda x: (model(x) ** 2).mean())
    step = mx.compile(loss_and_grad) if args.compile else loss_and_grad
    mx.eval(model.parameters(), images)
    mx.eval(step(images))  # warm-up (and trace when compiled)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        mx.eval(step(images))
        times.append(time.perf_counter() - start)
    step_s = min(times)  # the least-disturbed step: this machine may be shared
    print(json.dumps({
        "blas": _blas.bound_blas(),
        "sgemm_gflops": info.sgemm_gflops(),
        "step_s": step_s,
        "machine": info.collect(measure=False),
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--img", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up (the fastest is reported)")
    parser.add_argument("--compile", action="store_true", help="mx.compile the forward+backward")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    results = {}
    for name, env in VARIANTS.items():
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MLX_HJEPA_")}
        clean["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
        out = subprocess.run([sys.executable, __file__, "--worker", *sys.argv[1:]], env={**clean, **env},
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])

    machine = next(iter(results.values()))["machine"]
    print(f"machine: {machine['platform']}, {machine['cpu']}, {machine['cpu_cores']} cores")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()))
    print(f"model: ViT dim {args.dim} depth {args.depth} heads {args.heads} patch {args.patch} @ {args.img}px, "
          f"batch {args.batch}, fp32 forward+backward{' (mx.compile)' if args.compile else ''}, "
          f"best of {args.steps} timed steps\n")
    print(f"| {'variant':<28} | {'BLAS bound by libmlx':<48} | sgemm GFLOP/s | step s | img/s |")
    print(f"|{'-' * 30}|{'-' * 50}|---------------|--------|-------|")
    for name, r in results.items():
        print(f"| {name:<28} | {os.path.basename(r['blas'] or '?'):<48} | {r['sgemm_gflops']:13.1f} "
              f"| {r['step_s']:6.2f} | {args.batch / r['step_s']:5.1f} |")
    fast, slow = (results[n]["step_s"] for n in VARIANTS)
    print(f"\nspeed-up from the preload: {slow / fast:.1f}x per step")


if __name__ == "__main__":
    main()

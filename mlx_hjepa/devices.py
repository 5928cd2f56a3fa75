"""Which MLX device a run uses: `device: auto` takes the GPU (Metal or CUDA) when this MLX build
has one, the CPU otherwise; `gpu` insists on one. Also says when an NVIDIA GPU sits unused
because the installed MLX is the CPU build."""

import sys
import warnings
from pathlib import Path

import mlx.core as mx

# mlx-cpu and mlx-cuda-* each ship mlx/lib/libmlx.so: with both installed, the one installed last wins.
CUDA_HINT = ("pip install 'mlx-hjepa[cuda]' && pip install --force-reinstall --no-deps mlx-cuda-12 "
             "(CUDA 12; '[cuda13]' and mlx-cuda-13 for CUDA 13)")
BACKEND_PACKAGES = ("mlx-cpu", "mlx-cuda-12", "mlx-cuda-13")


class DeviceError(RuntimeError):
    """The config asks for a device this MLX build does not have."""


def gpu_available() -> bool:
    return mx.is_available(mx.gpu)


def pick_device(name: str, has_gpu=None) -> str:
    """'auto' | 'gpu' | 'cpu' (config spellings already mapped) -> 'gpu' or 'cpu'."""
    has_gpu = gpu_available() if has_gpu is None else has_gpu
    if name == "gpu" and not has_gpu:
        raise DeviceError("device is 'gpu' (mps/cuda) but this MLX build has no GPU backend; set device: cpu or "
                          f"auto{unused_gpu_hint(', or install the CUDA build: ')}.")
    return "gpu" if name == "gpu" or (name == "auto" and has_gpu) else "cpu"


def use_device(name: str) -> str:
    picked = pick_device(name)
    mx.set_default_device(mx.gpu if picked == "gpu" else mx.cpu)
    return picked


def select_device(cfg):
    """Make the config's `device` MLX's default device, with the warnings that go with it."""
    use_device(cfg.device)
    if cfg.training.use_amp and mx.default_device() == mx.cpu:
        warnings.warn("training.use_amp (bf16) on MLX's CPU backend is 6-9x slower than fp32; "
                      "set training.use_amp: false for CPU runs.", stacklevel=2)


def nvidia_gpu_present() -> bool:
    """An NVIDIA driver with at least one GPU (Linux only: /proc/driver/nvidia/gpus/<bus id>)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return sys.platform.startswith("linux") and gpus.is_dir() and any(gpus.iterdir())


def backend_packages() -> list:
    """The MLX backend distributions installed (normally one; two overwrite each other's libmlx.so)."""
    from importlib import metadata

    found = []
    for name in BACKEND_PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return found


def unused_gpu_hint(prefix: str = "") -> str:
    """Advice when an NVIDIA GPU is present but MLX cannot use it, else ''."""
    if gpu_available() or not nvidia_gpu_present():
        return ""
    return prefix + CUDA_HINT

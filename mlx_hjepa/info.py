"""What MLX will run on here: versions, device, the BLAS in use and its speed, mx.compile's JIT.

    python -m mlx_hjepa.info          # readable report
    python -m mlx_hjepa.info --json   # the same as JSON
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata

from . import __version__, _blas, _jit, _malloc, _streams  # the package import has already preloaded the BLAS
from .devices import backend_packages, pick_device, unused_gpu_hint

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402


def backend() -> str:
    if mx.metal.is_available():
        return "metal"
    if hasattr(mx, "cuda") and mx.cuda.is_available():
        return "cuda"
    return "cpu"


def sgemm_gflops(n: int = 1024, seconds: float = 0.5) -> float:
    """fp32 n x n matmul throughput on the CPU stream (where BLAS runs), after one warm-up."""
    a = mx.random.normal((n, n), stream=mx.cpu)
    b = mx.random.normal((n, n), stream=mx.cpu)
    mx.eval(mx.matmul(a, b, stream=mx.cpu))
    repeats, start = 0, time.perf_counter()
    while repeats == 0 or time.perf_counter() - start < seconds:
        mx.eval(mx.matmul(a, b, stream=mx.cpu))
        repeats += 1
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def blas_report(measure: bool = True) -> dict:
    preload = _blas.preload_result
    on_mac = sys.platform == "darwin"
    bound = "Accelerate (macOS system framework)" if on_mac else _blas.bound_blas()
    reference = _blas.bundled_reference_blas()
    report = {
        "library": bound,
        "is_reference_blas": bool(reference and bound and os.path.realpath(bound) == os.path.realpath(reference)),
        "preload": vars(preload) if preload else None,
    }
    for key, value in _blas.openblas_info(None if on_mac else bound).items():
        report[f"openblas_{key}"] = value
    if measure:
        report["sgemm_gflops"] = round(sgemm_gflops(), 1)
    return report


def jit_compiler() -> dict:
    """mx.compile on the CPU runs `g++` from PATH (MLX probes `g++ --version`; on macOS g++ is
    clang); without it, compiled functions silently run unfused."""
    path = shutil.which(_jit.COMPILER)
    works = bool(path) and subprocess.run([path, "--version"], capture_output=True).returncode == 0
    return {"compiler": _jit.COMPILER, "path": path, "cpu_compile_can_jit": works}


def cpu_model() -> str:
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
    if sys.platform == "darwin":
        result = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.strip()
    return platform.processor() or platform.machine()


def version_of(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def collect(measure: bool = True) -> dict:
    """Everything `python -m mlx_hjepa.info` prints; `measure=False` skips the timed matmul."""
    usable_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "versions": {
            "python": platform.python_version(),
            "mlx": mx.__version__,
            "mlx-data": version_of("mlx-data"),
            "numpy": np.__version__,
            "mlx-hjepa": __version__,
        },
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_cores": usable_cores,
        "default_device": str(mx.default_device()),
        "backend": backend(),
        "device_auto": pick_device("auto"),  # what a config's `device: auto` runs on
        "gpu_hint": unused_gpu_hint(),
        "backend_packages": backend_packages(),
        "blas": blas_report(measure),
        "compile": jit_compiler(),
        "cpu_memory": _malloc.planned(),
        "cpu_streams": _streams.planned(mx.cpu),
        "cpu_jit_flags": _jit.planned(),
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS") if k in os.environ},
    }


def format_report(info: dict) -> str:
    blas, compile_ = info["blas"], info["compile"]
    preload = blas["preload"] or {}
    lines = [
        f"platform        {info['platform']}",
        f"cpu             {info['cpu']} ({info['cpu_cores']} usable cores)",
        "versions        " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"device          {info['default_device']} (backend: {info['backend']}; device: auto -> {info['device_auto']})",
        f"blas            {blas['library']}" + ("  <- slow reference BLAS" if blas["is_reference_blas"] else ""),
    ]
    if "openblas_config" in blas:
        lines.append(f"blas build      {blas['openblas_config']} ({blas['openblas_threads']} threads)")
    if preload:
        lines.append(f"blas preload    {preload['status']}: {preload['reason']}")
    if "sgemm_gflops" in blas:
        lines.append(f"cpu sgemm       {blas['sgemm_gflops']} GFLOP/s (fp32 1024x1024 matmul)")
    if compile_["cpu_compile_can_jit"]:
        lines.append(f"mx.compile cpu  JIT via {compile_['path']}")
    else:
        lines.append(f"mx.compile cpu  no {compile_['compiler']} on PATH: compiled functions run unfused on the CPU")
    memory = {"apply": f"train, eval and report keep freed buffers for reuse (glibc mallopt; {_malloc.DISABLE_ENV}=1 "
                        "turns it off)",
              "disabled": f"freed buffers go back to the kernel ({_malloc.DISABLE_ENV} is set)",
              "unsupported": "the platform's allocator as is (the glibc setting does not apply here)"}
    lines.append(f"cpu memory      {memory[info['cpu_memory']]}")
    streams = {"two": "2: the training step splits each batch over two CPU streams, one core and a one-thread BLAS "
                      f"each ({_streams.ENV}=1: one stream)",
               "disabled": f"1: one stream ({_streams.ENV}=1 is set)",
               "one_core": "1: one stream (this process may use one core)",
               "blas": "1: one stream (MLX's BLAS here is not an OpenBLAS whose threads can be set)"}
    lines.append(f"cpu streams     {streams[info['cpu_streams']]}")
    jit_flags = {"apply": f"train, eval and report build MLX's CPU kernels with {' '.join(_jit.FLAGS)} (vectorised "
                          f"selects; own kernel cache; {_jit.DISABLE_ENV}=1 turns it off)",
                 "disabled": f"MLX's own compiler flags ({_jit.DISABLE_ENV} is set)",
                 "unsupported": "MLX's own compiler flags (the setting is for Linux)",
                 "no_compiler": f"none (no {_jit.COMPILER} on PATH)"}
    lines.append(f"cpu jit flags   {jit_flags[info['cpu_jit_flags']]}")
    if len(info["backend_packages"]) > 1:
        lines.append(f"mlx backends    {', '.join(info['backend_packages'])} are all installed and share "
                     f"mlx/lib/libmlx.so: the last installed is the one running ({info['backend']})")
    if info["gpu_hint"]:
        lines.append(f"gpu             an NVIDIA GPU is present but this MLX is the CPU build: {info['gpu_hint']}")
    if info["thread_env"]:
        lines.append("thread env      " + " ".join(f"{k}={v}" for k, v in info["thread_env"].items()))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mlx_hjepa.info", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--no-measure", action="store_true", help="skip the timed sgemm")
    args = parser.parse_args(argv)
    info = collect(measure=not args.no_measure)
    print(json.dumps(info, indent=2) if args.json else format_report(info))


if __name__ == "__main__":
    main()

"""Keep freed memory in the process (Linux, glibc), so MLX's CPU backend stops paying page faults.

MLX's CPU backend takes every array from `malloc` and gives it back with `free`, without a
cache of its own. glibc serves blocks above 32 MB (a ViT-S/16 @224 MLP activation at batch 32 is
38 MB) with `mmap` and returns them to the kernel on `free`, and trims freed heap memory beyond
128 KB; the next step asks for the same sizes again, and the kernel has to fault in and zero
every page once more. In a ViT-S/16 @224 training step on one core that was 15 s of the 86 s
of CPU time of 5 steps (5.5 million page faults; `perf` put 11% of the samples in the kernel's
`clear_page`). `keep_freed_memory()` tells glibc to serve everything from its heap (no mmap),
never to trim it, and to use one arena for all threads (MLX allocates on its own stream
threads, whose arenas would otherwise trim on their own), so memory freed by one step is
reused by the next: the same 5 steps then fault 1.5 million times, once per page of the peak,
with 2.5 s of system time. The process keeps its peak resident size until it exits (peak RSS
5.6 -> 5.8 GiB there), which a training or evaluation command wants anyway.

The command-line tools (`python -m mlx_hjepa.train`, `.eval`, `.report`) call it; importing the
package does not, so a program that imports mlx_hjepa keeps its own allocator settings.
MLX_HJEPA_NO_MALLOPT=1 turns it off. Elsewhere (macOS, musl, Windows) it does nothing: Metal and
CUDA keep their own buffer caches.
"""

import ctypes
import os
import platform
import sys

DISABLE_ENV = "MLX_HJEPA_NO_MALLOPT"
# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
NEVER_TRIM = 2**31 - 1  # mallopt takes an int

status = "not_called"  # applied | disabled | unsupported | failed, once called


def planned() -> str:
    """What keep_freed_memory() would do here: "apply", "disabled" (the env var) or "unsupported"."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return "disabled"
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "unsupported"
    return "apply"


def keep_freed_memory() -> str:
    """Apply the settings above once per process; returns (and records in `status`) what happened."""
    global status
    if status != "not_called":
        return status
    plan = planned()
    if plan != "apply":
        status = plan
    else:
        try:
            mallopt = ctypes.CDLL("libc.so.6").mallopt
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            ok = [mallopt(param, value) for param, value in
                  ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, NEVER_TRIM), (M_ARENA_MAX, 1))]
            status = "applied" if all(ok) else "failed"
        except (OSError, AttributeError):
            status = "failed"
    return status

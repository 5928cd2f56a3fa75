"""Let MLX's CPU compiler vectorise the fused kernels that divide on one side of a select (Linux).

Under `mx.compile`, MLX's CPU backend writes each fused elementwise kernel as C++ and builds it
with `g++ -O3`. GCC's default `-ftrapping-math` treats every floating-point operation as one that
may raise an exception flag, so it will not evaluate an operation the source reaches only on one
side of a select (`mx.where`, which the fast GELU uses: a division on the inner side) for both
sides at once, and the whole loop stays scalar. With `-fno-trapping-math` GCC computes both sides
in SIMD registers and picks per lane: the fast GELU's kernels use packed divides and multiplies.
The flag adds no instruction set (the kernels run on any CPU the wheel runs on) and no
reassociation (that needs -fassociative-math as well): every value is the same bit for bit, which
tests/test_jit.py checks. MLX has no switch for its compiler's flags, so `use_jit_flags()` puts a
two-line `g++` first on this process's PATH that adds the flag and runs the real one.

Kernels are cached on disk by name (not by flags) under `$TMPDIR/mlx/<version>/cpu`. So that a
scalar kernel cached by another program is not reused, the process's TMPDIR becomes a private
folder of its own: `<temp>/mlx-hjepa-<uid>` (mode 0700, ours; a fresh one if that path is anyone
else's), which also holds the wrapper.

`python -m mlx_hjepa.train`, `.eval` and `.report` call it; importing the package does not.
MLX_HJEPA_NO_JIT_FLAGS=1 turns it off; `python -m mlx_hjepa.info` says which applies.
"""

import os
import shlex
import shutil
import stat
import sys
import tempfile
from pathlib import Path

DISABLE_ENV = "MLX_HJEPA_NO_JIT_FLAGS"
FLAGS = ("-fno-trapping-math",)
COMPILER = "g++"  # the command MLX's CPU JIT runs on Linux (mlx/backend/cpu/jit_compiler.cpp)

status = "not_called"  # applied | disabled | unsupported | no_compiler | failed, once called
folder = None  # the private TMPDIR, once applied


def planned() -> str:
    """What use_jit_flags() would do: "apply", "disabled" (the env var), "unsupported" (not Linux:
    elsewhere MLX's JIT is not g++) or "no_compiler" (no g++ on PATH: MLX runs uncompiled)."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return "disabled"
    if not sys.platform.startswith("linux"):
        return "unsupported"
    if shutil.which(COMPILER) is None:
        return "no_compiler"
    return "apply"


def _private_folder(base: Path) -> Path:
    """<base>/mlx-hjepa-<uid> if it is ours and nobody else can write to it, else a fresh folder:
    the wrapper in it runs as the compiler, so a folder someone else could write must not be used."""
    path = base / f"mlx-hjepa-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022:
            return path
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="mlx-hjepa-", dir=base))


def use_jit_flags() -> str:
    """Apply the above once per process, before MLX compiles its first kernel; returns (and
    records in `status`) what happened."""
    global status, folder
    if status != "not_called":
        return status
    status = planned()
    if status != "apply":
        return status
    real = Path(shutil.which(COMPILER))
    base = Path(tempfile.gettempdir())
    try:
        # A process started by one that applied this inherits its TMPDIR and PATH: keep them.
        here = base if base.name.startswith("mlx-hjepa-") else _private_folder(base)
        bin_dir = here / "bin"
        if real.parent != bin_dir:
            bin_dir.mkdir(mode=0o700, exist_ok=True)
            wrapper = bin_dir / COMPILER
            script = f"#!/bin/sh\nexec {shlex.quote(str(real))} {' '.join(FLAGS)} \"$@\"\n"
            if not wrapper.is_file() or wrapper.read_text() != script:
                partial = bin_dir / f".{COMPILER}.{os.getpid()}"
                partial.write_text(script)
                partial.chmod(0o700)
                partial.replace(wrapper)  # atomic: the ranks of one job may all write it
            os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    except OSError:
        status = "failed"
        return status
    os.environ["TMPDIR"] = str(here)
    tempfile.tempdir = None  # Python's tempfile reads TMPDIR again
    status, folder = "applied", here
    return status

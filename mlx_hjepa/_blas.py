"""Bind MLX's Linux CPU backend to an optimized OpenBLAS instead of its bundled reference BLAS.

The Linux `mlx[cpu]` wheel links the netlib reference BLAS and LAPACK it ships in
`mlx_cpu.libs/` (a ViT step runs 6-13x slower than with OpenBLAS). When `libmlx.so` is
loaded, the dynamic linker resolves its `cblas_sgemm`, `sgesdd_`, ... from libraries in the
process's global scope before its own dependencies, so an OpenBLAS loaded with RTLD_GLOBAL
*before* `mlx.core` is imported serves every BLAS and LAPACK call MLX makes. Loaded after,
it changes nothing. `mlx_hjepa/__init__.py` calls `preload_blas()` first thing.

Environment:
    MLX_HJEPA_NO_BLAS_PRELOAD=1    do nothing (keep whatever MLX links)
    MLX_HJEPA_BLAS=/path/lib.so    load this library instead of searching

Search order (first that loads and exports `cblas_sgemm` and `sgesdd_` wins): the
MLX_HJEPA_BLAS override, then the system OpenBLAS, threaded builds first (Debian/Ubuntu
`libopenblas0-pthread`, Fedora `libopenblasp`, whatever `libopenblas.so.0` the loader finds,
OpenMP builds, a conda env's, serial builds), and last the PyPI `cmeel-openblas` wheel only
on CPUs with AVX-512 (it is built for no other). Distribution OpenBLAS builds pick their
kernels for the running CPU, so they are safe everywhere. numpy's and scipy's OpenBLAS rename
their symbols and cannot serve.
"""

import ctypes
import glob
import os
import platform
import struct
import sys
import warnings
from dataclasses import dataclass

DISABLE_ENV = "MLX_HJEPA_NO_BLAS_PRELOAD"
OVERRIDE_ENV = "MLX_HJEPA_BLAS"
INSTALL_HINT = "bash scripts/install_linux_blas.sh (or: sudo apt-get install libopenblas0-pthread)"
REQUIRED_SYMBOLS = ("cblas_sgemm", "sgesdd_")


@dataclass(frozen=True)
class PreloadResult:
    status: str  # loaded | disabled | not_needed | not_found | too_late | failed
    path: str | None  # the library loaded (or, for too_late, the one that would have been)
    reason: str


preload_result: PreloadResult | None = None


def preload_blas() -> PreloadResult:
    """Load the fastest safe BLAS for MLX's CPU backend; warn once if MLX stays on the slow one."""
    global preload_result
    if preload_result is None:
        preload_result = _preload()
        if preload_result.status in ("not_found", "too_late", "failed"):
            warnings.warn(preload_result.reason, RuntimeWarning, stacklevel=2)
    return preload_result


def _preload() -> PreloadResult:
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return PreloadResult("disabled", None, f"{DISABLE_ENV} is set")
    reference_blas = bundled_reference_blas()
    if reference_blas is None:
        return PreloadResult("not_needed", None, "MLX here does not use the bundled reference BLAS")

    override = os.environ.get(OVERRIDE_ENV)
    candidates = [override] if override else _candidates()
    if "mlx.core" in sys.modules:
        bound = bound_blas()
        if bound and os.path.realpath(bound) != os.path.realpath(reference_blas):
            return PreloadResult("loaded", bound, "bound before mlx_hjepa was imported (LD_PRELOAD?)")
        path = next(filter(None, map(_usable_path, candidates)), None)
        if path:
            fix = f"Import mlx_hjepa before mlx, or run with LD_PRELOAD={path}"
        else:
            fix = f"Install an OpenBLAS ({INSTALL_HINT}) and import mlx_hjepa before mlx"
        return PreloadResult(
            "too_late", path,
            "mlx.core was imported before mlx_hjepa, so MLX keeps its slow reference BLAS "
            f"(6-13x slower steps on the CPU). {fix}.",
        )
    for candidate in candidates:
        path = _usable_path(candidate)
        if path:
            ctypes.CDLL(path, mode=os.RTLD_GLOBAL | os.RTLD_NOW)
            return PreloadResult("loaded", path, "preloaded before mlx.core")
    if override:
        return PreloadResult(
            "failed", None,
            f"{OVERRIDE_ENV}={override} is not a loadable BLAS exporting {', '.join(REQUIRED_SYMBOLS)}; "
            f"point it at an OpenBLAS such as libopenblas.so.0, or unset it.",
        )
    return PreloadResult(
        "not_found", None,
        "No OpenBLAS found, so MLX uses its bundled reference BLAS (6-13x slower steps on the CPU). "
        f"Install one with: {INSTALL_HINT}. Set {DISABLE_ENV}=1 to silence this.",
    )


def _candidates() -> list[str]:
    multiarch = f"/usr/lib/{platform.machine()}-linux-gnu"
    conda = os.environ.get("CONDA_PREFIX", "")
    candidates = [
        f"{multiarch}/openblas-pthread/libopenblas.so.0",  # Debian, Ubuntu
        "/usr/lib64/libopenblasp.so.0",  # Fedora, RHEL (pthreads build)
        "libopenblas.so.0",  # whatever the loader finds: ld.so.cache, LD_LIBRARY_PATH
        f"{multiarch}/openblas-openmp/libopenblas.so.0",
        "/usr/lib64/libopenblaso.so.0",
        f"{conda}/lib/libopenblas.so.0" if conda else "",
        f"{multiarch}/openblas-serial/libopenblas.so.0",
    ]
    if _cpu_has_avx512():
        for site in sys.path:
            candidates += glob.glob(os.path.join(site, "cmeel.prefix", "lib", "libopenblas*.so*"))
    return [c for c in candidates if c]


def _usable_path(candidate: str) -> str | None:
    """Absolute path of `candidate` if it loads and exports standard BLAS+LAPACK names."""
    if os.sep in candidate and not os.path.exists(candidate):
        return None
    try:
        lib = ctypes.CDLL(candidate, mode=os.RTLD_LOCAL)  # local: a rejected library binds nothing
    except OSError:
        return None
    if not all(hasattr(lib, name) for name in REQUIRED_SYMBOLS):
        return None
    return _library_of(ctypes.cast(lib.cblas_sgemm, ctypes.c_void_p).value) or candidate


def _cpu_has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return all(f in flags for f in ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"))


def mlx_library() -> str | None:
    """Path of the installed libmlx.so (without importing mlx)."""
    import importlib.util

    spec = importlib.util.find_spec("mlx")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(location, "lib", "libmlx.so")
        if os.path.exists(path):
            return path
    return None


def bundled_reference_blas() -> str | None:
    """The netlib BLAS shipped by the Linux `mlx[cpu]` wheel, or None (macOS, CUDA, source builds)."""
    if not sys.platform.startswith("linux"):
        return None
    libmlx = mlx_library()
    if libmlx is None:
        return None
    site = os.path.dirname(os.path.dirname(os.path.dirname(libmlx)))
    found = glob.glob(os.path.join(site, "mlx_cpu.libs", "libblas*.so*"))
    return found[0] if found else None


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _library_of(address: int | None) -> str | None:
    """File of the shared library that contains `address` (dladdr)."""
    if not address:
        return None
    for name in (None, "libdl.so.2"):
        try:
            dladdr = ctypes.CDLL(name).dladdr
            break
        except (OSError, AttributeError):
            continue
    else:
        return None
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    info = _DlInfo()
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.realpath(info.dli_fname.decode())


def bound_blas(symbol: str = "cblas_sgemm") -> str | None:
    """The library that the loaded libmlx.so really calls for `symbol`.

    Reads libmlx's resolved GOT slot for the symbol and asks dladdr which library holds
    that address: the dynamic linker's own answer, not a guess. None if MLX is not
    loaded or not a Linux ELF build.
    """
    libmlx = mlx_library()
    if libmlx is None or not sys.platform.startswith("linux"):
        return None
    base = _load_base(os.path.realpath(libmlx))
    offset = _got_offset(libmlx, symbol)
    if base is None or offset is None:
        return None
    return _library_of(ctypes.c_void_p.from_address(base + offset).value)


def _load_base(path: str) -> int | None:
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == path and int(fields[2], 16) == 0:
                return int(fields[0].split("-")[0], 16)
    return None


def _got_offset(path: str, symbol: str) -> int | None:
    """r_offset of the relocation that fills `symbol`'s GOT slot in an ELF64 little-endian file."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            return None
        shoff, = struct.unpack_from("<Q", header, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", header, 0x3A)
        f.seek(shoff)
        table = f.read(shentsize * shnum)
        # (sh_type, sh_offset, sh_size, sh_link, sh_entsize) per section
        sections = [
            struct.unpack_from("<4xI16xQQI12xQ", table, i * shentsize) for i in range(shnum)
        ]

        def read(section):
            f.seek(section[1])
            return f.read(section[2])

        SHT_RELA, SHT_DYNSYM = 4, 11
        dynsym = next((s for s in sections if s[0] == SHT_DYNSYM), None)
        if dynsym is None:
            return None
        symbols, names = read(dynsym), read(sections[dynsym[3]])
        wanted = symbol.encode() + b"\0"
        for rela in (s for s in sections if s[0] == SHT_RELA):
            data = read(rela)
            for r_offset, r_info, _ in struct.iter_unpack("<QQq", data):
                name_offset, = struct.unpack_from("<I", symbols, (r_info >> 32) * 24)
                if names.startswith(wanted, name_offset):
                    return r_offset
    return None


def openblas_info(path: str | None) -> dict:
    """OpenBLAS build config and thread count of the library at `path` (empty if not OpenBLAS)."""
    if not path:
        return {}
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_LOCAL)
        lib.openblas_get_config.restype = ctypes.c_char_p
        return {"config": lib.openblas_get_config().decode(), "threads": lib.openblas_get_num_threads()}
    except (OSError, AttributeError):
        return {}


def set_threads(n: int) -> int | None:
    """Set the thread count of the OpenBLAS that MLX calls (`openblas_set_num_threads`, read at
    every call). Returns the count before, or None when MLX's BLAS is not an OpenBLAS reachable
    here (macOS Accelerate, MKL, the reference BLAS): then nothing changes."""
    path = bound_blas()
    if not path:
        return None
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_LOCAL)  # already loaded: the same library, not a copy
        before = lib.openblas_get_num_threads()
        lib.openblas_set_num_threads(ctypes.c_int(n))
        return before
    except (OSError, AttributeError):
        return None

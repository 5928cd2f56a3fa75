"""The fast-BLAS preload: same numerics, honest reporting, one warning when it cannot act.

Each check runs in a fresh interpreter, because the preload only works before mlx.core is
loaded and this pytest process may have loaded it already.
"""

import ctypes.util
import glob
import json
import os
import subprocess
import sys

import pytest

import mlx_hjepa  # noqa: F401  (preloads before mlx.core, as every user script should)
from mlx_hjepa import _blas

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ON_REFERENCE_BLAS_BUILD = _blas.bundled_reference_blas() is not None


def _openblas_loads():
    patterns = ["/usr/lib*/libopenblas*.so*", "/usr/lib/*/libopenblas*.so*", "/usr/lib/*/*/libopenblas*.so*"]
    names = [ctypes.util.find_library("openblas"), *(p for pattern in patterns for p in glob.glob(pattern))]
    for name in filter(None, names):
        try:
            ctypes.CDLL(name, mode=os.RTLD_LOCAL)
            return True
        except OSError:
            continue
    return False


OPENBLAS_INSTALLED = _openblas_loads()
needs_reference_build = pytest.mark.skipif(
    not ON_REFERENCE_BLAS_BUILD, reason="only the Linux mlx[cpu] wheel bundles the reference BLAS"
)


def run_python(code, args=(), **env):
    clean = {k: v for k, v in os.environ.items() if k not in (_blas.DISABLE_ENV, _blas.OVERRIDE_ENV, "LD_PRELOAD")}
    result = subprocess.run(
        [sys.executable, *(["-c", code] if code else []), *args],
        cwd=REPO, env={**clean, "MLX_ENABLE_TF32": "0", **env}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result


NUMERICS = r"""
import json
import mlx_hjepa
from mlx_hjepa import _blas
import mlx.core as mx
import numpy as np

rng = np.random.default_rng(0)
errors = {}

def rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())

a, b = rng.standard_normal((96, 200)).astype(np.float32), rng.standard_normal((200, 72)).astype(np.float32)
errors["matmul"] = rel_err(mx.array(a) @ mx.array(b), a.astype(np.float64) @ b)

x = rng.standard_normal((2, 12, 12, 5)).astype(np.float32)   # NHWC
w = rng.standard_normal((8, 3, 3, 5)).astype(np.float32)     # O, kH, kW, C
windows = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (3, 3), axis=(1, 2))
errors["conv2d"] = rel_err(mx.conv2d(mx.array(x), mx.array(w)), np.einsum("nhwcij,oijc->nhwo", windows, w))

W = rng.standard_normal((200, 16)).astype(np.float32) * 0.1
grad = mx.grad(lambda W: mx.tanh(mx.array(a) @ W).sum())(mx.array(W))
h = np.tanh(a.astype(np.float64) @ W)
errors["grad"] = rel_err(grad, a.T.astype(np.float64) @ (1 - h**2))

m = rng.standard_normal((48, 48)).astype(np.float32) + 8 * np.eye(48, dtype=np.float32)
errors["inv"] = rel_err(mx.linalg.inv(mx.array(m), stream=mx.cpu), np.linalg.inv(m.astype(np.float64)))
u, s, vt = mx.linalg.svd(mx.array(a), stream=mx.cpu)
errors["svd_values"] = rel_err(s, np.linalg.svd(a.astype(np.float64), compute_uv=False))
errors["svd_reconstruct"] = rel_err((u * s) @ vt[: s.shape[0]], a)

print(json.dumps({"bound": _blas.bound_blas(), "sgesdd": _blas.bound_blas("sgesdd_"), "errors": errors}))
"""


@pytest.mark.parametrize("preload", ["default", "disabled"])
def test_numerics_match_numpy_whichever_blas(preload):
    env = {_blas.DISABLE_ENV: "1"} if preload == "disabled" else {}
    out = json.loads(run_python(NUMERICS, **env).stdout)
    for op, err in out["errors"].items():
        assert err < 5e-6, f"{op}: relative error {err:.2e} with {out['bound']}"
    if ON_REFERENCE_BLAS_BUILD and preload == "disabled":
        assert os.path.realpath(out["bound"]) == os.path.realpath(_blas.bundled_reference_blas())
    if ON_REFERENCE_BLAS_BUILD and preload == "default" and OPENBLAS_INSTALLED:
        assert "openblas" in out["bound"].lower() and "openblas" in out["sgesdd"].lower()


@needs_reference_build
def test_info_reports_the_blas_mlx_is_bound_to():
    info = json.loads(run_python(None, ["-m", "mlx_hjepa.info", "--json"]).stdout)
    blas = info["blas"]
    assert info["backend"] == "cpu" and info["versions"]["mlx"]
    assert blas["sgemm_gflops"] > 0 and os.path.exists(blas["library"])
    if not OPENBLAS_INSTALLED:
        pytest.skip("no OpenBLAS installed here: nothing to preload")
    assert blas["preload"]["status"] == "loaded"
    assert "openblas" in blas["library"].lower() and not blas["is_reference_blas"]


@needs_reference_build
def test_bound_blas_agrees_with_the_dynamic_linker(tmp_path):
    code = "import mlx_hjepa, mlx.core; from mlx_hjepa import _blas; print(_blas.bound_blas())"
    out = run_python(code, LD_DEBUG="bindings", LD_DEBUG_OUTPUT=str(tmp_path / "ld")).stdout.strip()
    log = "".join(open(p).read() for p in glob.glob(str(tmp_path / "ld*")))
    line = next(l for l in log.splitlines() if "libmlx.so" in l.split(" to ")[0] and "`cblas_sgemm'" in l)
    linker_says = line.split(" to ")[1].split(" [")[0]
    assert os.path.realpath(linker_says) == out


@needs_reference_build
def test_one_warning_naming_the_fix_when_mlx_core_came_first():
    code = "import mlx.core, mlx_hjepa; from mlx_hjepa import _blas; print(_blas.preload_result.status, _blas.bound_blas())"
    result = run_python(code)
    status, bound = result.stdout.split()
    assert status == "too_late" and bound == os.path.realpath(_blas.bundled_reference_blas())
    assert result.stderr.count("RuntimeWarning") == 1
    assert "import mlx_hjepa before mlx" in result.stderr.lower()
    assert ("LD_PRELOAD=" if OPENBLAS_INSTALLED else "install_linux_blas.sh") in result.stderr


@needs_reference_build
def test_opt_out_env_var_disables_preload():
    code = "import mlx_hjepa, mlx.core; from mlx_hjepa import _blas; print(_blas.preload_result.status, _blas.bound_blas())"
    result = run_python(code, **{_blas.DISABLE_ENV: "1"})
    status, bound = result.stdout.split()
    assert status == "disabled" and bound == os.path.realpath(_blas.bundled_reference_blas())
    assert "Warning" not in result.stderr


@needs_reference_build
def test_missing_openblas_warns_with_the_install_command():
    code = "\n".join([
        "import os",
        f"os.environ['{_blas.DISABLE_ENV}'] = '1'",
        "from mlx_hjepa import _blas",
        f"del os.environ['{_blas.DISABLE_ENV}']",
        "_blas._candidates = lambda: []  # as on a machine without OpenBLAS",
        "_blas.preload_result = None",
        "print(_blas.preload_blas().status)",
    ])
    result = run_python(code)
    assert result.stdout.strip() == "not_found"
    assert result.stderr.count("RuntimeWarning") == 1 and "install_linux_blas.sh" in result.stderr


@needs_reference_build
def test_bad_override_warns_and_loads_nothing():
    code = "import mlx_hjepa, mlx.core; from mlx_hjepa import _blas; print(_blas.preload_result.status, _blas.bound_blas())"
    result = run_python(code, **{_blas.OVERRIDE_ENV: "/nonexistent/libopenblas.so.0"})
    status, bound = result.stdout.split()
    assert status == "failed" and bound == os.path.realpath(_blas.bundled_reference_blas())
    assert result.stderr.count("RuntimeWarning") == 1 and _blas.OVERRIDE_ENV in result.stderr


def test_renamed_symbol_libraries_are_rejected():
    # numpy's bundled OpenBLAS exports scipy_cblas_sgemm etc., which MLX cannot call.
    import numpy

    libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(numpy.__file__)), "numpy.libs", "*openblas*.so*"))
    if not libs:
        pytest.skip("this numpy bundles no OpenBLAS")
    assert _blas._usable_path(libs[0]) is None

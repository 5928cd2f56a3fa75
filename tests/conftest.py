import os

os.environ.setdefault("MLX_ENABLE_TF32", "0")  # exact fp32 matmuls in comparisons (MLX_NOTES)

import mlx_hjepa  # noqa: E402,F401  (preloads the fast BLAS before mlx.core)

import tempfile  # noqa: E402

import pytest  # noqa: E402

from mlx_hjepa import _jit  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_jit_flags_setting():
    """Tests that call a command's main() in this process apply _jit's PATH and TMPDIR here; undo
    it after each test, so that later tests and their subprocesses start from the user's setting."""
    saved = {k: os.environ.get(k) for k in ("PATH", "TMPDIR")}
    state = (_jit.status, _jit.folder, tempfile.tempdir)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _jit.status, _jit.folder, tempfile.tempdir = state

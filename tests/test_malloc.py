"""_malloc.keep_freed_memory: with it, MLX's freed CPU buffers are reused instead of being handed
back to the kernel and faulted in again; the command-line tools turn it on, the import does not."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                reason="the setting is for glibc on Linux; elsewhere it does nothing")

# 10 rounds of a fresh 48 MB array, each freed before the next round (as a training step's
# activations are): minor page faults counted after the first round.
LOOP = """
import resource, sys
import mlx_hjepa
from mlx_hjepa import _malloc
import mlx.core as mx
if sys.argv[1] == "keep":
    print(_malloc.keep_freed_memory())
else:
    print(_malloc.status)
def round_():
    x = mx.ones((12_000_000,)) * 2
    mx.eval(x)
    del x
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode, **env):
    out = subprocess.run([sys.executable, "-c", LOOP, mode], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "OPENBLAS_NUM_THREADS": "1", **env}).stdout.split()
    return out[0], int(out[1])


def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    status, kept = faults("keep")
    assert status == "applied"
    untouched_status, plain = faults("import-only")
    assert untouched_status == "not_called"  # importing the package leaves the allocator alone
    assert plain > 10 * 10_000  # each round faults in its 48 MB (11.7k pages of 4 KB) again
    assert kept < plain / 10, (kept, plain)


def test_env_var_turns_it_off():
    status, count = faults("keep", MLX_HJEPA_NO_MALLOPT="1")
    assert status == "disabled" and count > 10 * 10_000


def test_the_training_command_applies_it():
    code = ("import sys; from mlx_hjepa.train.__main__ import main; from mlx_hjepa import _malloc; "
            "main(['configs/quickstart.yaml', '--dry-run']); print('STATUS', _malloc.status)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}).stdout
    assert "STATUS applied" in out, out[-2000:]

"""_jit: MLX's CPU kernels built with -fno-trapping-math through a g++ wrapper and a private kernel
cache; the same values bit for bit, and only where it applies."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_hjepa import _jit, info

ROOT = Path(__file__).resolve().parent.parent
needs_gxx = pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("g++") is None,
                               reason="the setting applies where MLX's CPU JIT runs g++ on Linux")

# The fast GELU forward and backward (a division on one side of a select: the kernels the flag
# vectorises) on values across its range, its clamp and its tails, written out bit for bit.
PROBE = r"""
import json, os, subprocess, sys
import numpy as np
from mlx_hjepa import _jit
print("STATUS", _jit.use_jit_flags())
if sys.argv[1] == "again":  # a second call in the process, and a child process, change nothing more
    path = os.environ["PATH"]
    _jit.status = "not_called"
    _jit.use_jit_flags()
    assert os.environ["PATH"] == path, "PATH grew"
    child = subprocess.run([sys.executable, "-c", "import os; from mlx_hjepa import _jit; "
                            "print(_jit.use_jit_flags(), _jit.folder, "
                            "os.environ['PATH'].split(os.pathsep).count(str(_jit.folder / 'bin')))"],
                           capture_output=True, text=True, check=True).stdout.split()
    print("CHILD", json.dumps(child))
import mlx.core as mx
from mlx_hjepa._ops import fast_gelu
x = mx.array(np.concatenate([np.linspace(-8, 8, 40001), [-1e4, -60.0, -5.66, 5.66, 60.0, 1e4, 0.0]]).astype(np.float32))
c = mx.array(np.random.default_rng(0).normal(size=x.shape).astype(np.float32))
y, (g,) = mx.compile(lambda x, c: (fast_gelu(x), mx.vjp(fast_gelu, [x], [c])[1]))(x, c)
print("BITS", np.array(y).view(np.uint32).tobytes().hex()[:64], hash(np.array(y).tobytes()), hash(np.array(g).tobytes()))
print("FOLDER", _jit.folder)
print("GXX", subprocess.run("g++ -### -x c -c /dev/null -o /dev/null", shell=True, capture_output=True, text=True).stderr.count("-fno-trapping-math"))
"""


def run_probe(tmp_path, *, disabled=False, mode="once"):
    env = {k: v for k, v in os.environ.items() if k != _jit.DISABLE_ENV}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if "mlx-hjepa-" not in p)
    tmp_path.mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp_path)
    env["PYTHONHASHSEED"] = "0"
    if disabled:
        env[_jit.DISABLE_ENV] = "1"
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)


def test_planned_says_where_it_applies(monkeypatch):
    monkeypatch.setenv(_jit.DISABLE_ENV, "1")
    assert _jit.planned() == "disabled"
    monkeypatch.setenv(_jit.DISABLE_ENV, "0")
    monkeypatch.setattr(_jit.sys, "platform", "darwin")
    assert _jit.planned() == "unsupported"
    monkeypatch.setattr(_jit.sys, "platform", "linux")
    monkeypatch.setattr(_jit.shutil, "which", lambda name: None)
    assert _jit.planned() == "no_compiler"
    monkeypatch.setattr(_jit.shutil, "which", lambda name: "/usr/bin/g++")
    assert _jit.planned() == "apply"


@needs_gxx
def test_kernels_built_with_the_flag_give_the_same_bits_from_a_private_cache(tmp_path):
    flagged = run_probe(tmp_path / "a")
    plain = run_probe(tmp_path / "b", disabled=True)
    assert flagged["STATUS"] == "applied" and plain["STATUS"] == "disabled"
    assert int(flagged["GXX"]) > 0 and plain["GXX"] == "0"  # the g++ MLX will run adds the flag, or not
    folder = Path(flagged["FOLDER"])
    assert folder.parent == tmp_path / "a" and folder.name == f"mlx-hjepa-{os.getuid()}"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert list((folder / "mlx").rglob("*.so")), "MLX's kernels are cached in the private folder"
    assert not (tmp_path / "a" / "mlx").exists(), "and not in the shared one"
    assert flagged["BITS"] == plain["BITS"]  # forward and backward, bit for bit


@needs_gxx
def test_a_second_call_and_a_child_process_reuse_the_folder(tmp_path):
    out = run_probe(tmp_path, mode="again")
    status, folder, wrappers_on_path = json.loads(out["CHILD"])
    assert status == "applied" and folder == out["FOLDER"] and wrappers_on_path == "1"


def test_a_folder_someone_else_could_write_is_not_used(tmp_path):
    shared = tmp_path / f"mlx-hjepa-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)
    chosen = _jit._private_folder(tmp_path)
    assert chosen != shared and chosen.parent == tmp_path and oct(chosen.stat().st_mode & 0o777) == "0o700"
    shared.chmod(0o700)
    assert _jit._private_folder(tmp_path) == shared


@needs_gxx
def test_the_training_command_applies_it_and_info_reports_it(tmp_path):
    code = ("import os; from mlx_hjepa.train.__main__ import main; "
            "main(['configs/quickstart.yaml', '--dry-run']); print('TMPDIR', os.environ['TMPDIR'])")
    env = {k: v for k, v in os.environ.items() if k != _jit.DISABLE_ENV}
    env["TMPDIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env).stdout
    assert f"TMPDIR {tmp_path / f'mlx-hjepa-{os.getuid()}'}" in out, out[-2000:]
    assert "-fno-trapping-math" in info.format_report(info.collect(measure=False))

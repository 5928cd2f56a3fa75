"""Two CPU streams (mlx_hjepa/_streams.py): when the step splits its batch over them, and that the
split changes where the step runs, not what it computes."""

import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from helpers import tiny_batch, tiny_hjepa, tiny_step
from mlx.utils import tree_flatten

from mlx_hjepa import _blas, _streams

ROOT = Path(__file__).resolve().parents[1]


def test_two_streams_on_a_multicore_cpu_one_when_disabled_single_core_or_gpu(monkeypatch):
    monkeypatch.delenv(_streams.ENV, raising=False)
    monkeypatch.setattr(_streams, "available_cores", lambda: 2)
    monkeypatch.setattr(_streams, "blas_threads_controllable", lambda: True)
    assert _streams.planned(mx.cpu) == "two"
    side = _streams.side_stream()
    assert side is not None and side != mx.default_stream(mx.cpu) and side == _streams.side_stream()
    assert _streams.planned(mx.gpu) == "gpu"
    monkeypatch.setattr(_streams, "blas_threads_controllable", lambda: False)
    assert _streams.planned(mx.cpu) == "blas" and _streams.side_stream() is None
    monkeypatch.setattr(_streams, "blas_threads_controllable", lambda: True)
    monkeypatch.setenv(_streams.ENV, "1")
    assert _streams.planned(mx.cpu) == "disabled" and _streams.side_stream() is None
    monkeypatch.setenv(_streams.ENV, "2")
    monkeypatch.setattr(_streams, "available_cores", lambda: 1)
    assert _streams.planned(mx.cpu) == "one_core" and _streams.side_stream() is None


def test_a_bad_value_says_which_values_work(monkeypatch):
    monkeypatch.setenv(_streams.ENV, "lots")
    with pytest.raises(ValueError, match="set it to 1 .* or 2"):
        _streams.planned(mx.cpu)


@pytest.mark.skipif(not _blas.bound_blas(), reason="MLX's BLAS is not an OpenBLAS reachable here")
def test_blas_threads_can_be_set_and_read_back():
    before = _blas.set_threads(1)
    assert before is not None and before >= 1
    assert _blas.set_threads(before) == 1


def run(side_stream, batch_size=8, steps=3, **options):
    model = tiny_hjepa(seed=3)
    step = tiny_step(model, **options)
    step.side_stream = side_stream
    losses, levels = [], []
    for i in range(steps):
        images, masks = tiny_batch(model, batch_size=batch_size, seed=i)
        out = step(images, masks)
        mx.eval(out)
        losses.append(out["loss"].item())
        levels.append(np.array(out["level_losses"]))
    return step, losses, levels, {k: np.array(v) for k, v in tree_flatten(model.parameters())}


@pytest.mark.parametrize("batch_size", [8, 5])  # 5: halves of 2 and 3 rows, weighted by size
def test_halves_on_two_streams_train_like_one_batch_on_one(batch_size):
    side = mx.new_stream(mx.cpu)
    one, one_losses, one_levels, one_params = run(None, batch_size)
    two, two_losses, two_levels, two_params = run(side, batch_size)
    assert not one.splits_batch(batch_size) and two.splits_batch(batch_size)
    np.testing.assert_allclose(two_losses, one_losses, rtol=1e-5)
    np.testing.assert_allclose(np.stack(two_levels), np.stack(one_levels), rtol=1e-5)
    assert one_params.keys() == two_params.keys()
    for name in one_params:
        np.testing.assert_allclose(two_params[name], one_params[name], rtol=1e-4, atol=2e-6, err_msg=name)


def test_vicreg_and_single_images_stay_on_one_stream():
    step = tiny_step(tiny_hjepa(), variance_weight=1.0)
    step.side_stream = mx.new_stream(mx.cpu)
    assert not step.splits_batch(8)
    step = tiny_step(tiny_hjepa())
    step.side_stream = mx.new_stream(mx.cpu)
    assert step.splits_batch(2) and not step.splits_batch(1)


def test_the_step_takes_the_side_stream_by_default(monkeypatch):
    monkeypatch.setattr(_streams, "planned", lambda device=None: "two")
    assert tiny_step(tiny_hjepa()).side_stream == _streams.side_stream() is not None
    monkeypatch.setattr(_streams, "planned", lambda device=None: "disabled")
    assert tiny_step(tiny_hjepa()).side_stream is None


def test_info_says_how_many_cpu_streams_the_step_uses(monkeypatch):
    from mlx_hjepa import info

    monkeypatch.setattr(_streams, "available_cores", lambda: 4)
    monkeypatch.setattr(_streams, "blas_threads_controllable", lambda: True)
    monkeypatch.delenv(_streams.ENV, raising=False)
    assert "cpu streams     2: the training step splits" in info.format_report(info.collect(measure=False))
    monkeypatch.setenv(_streams.ENV, "1")
    assert "cpu streams     1: one stream" in info.format_report(info.collect(measure=False))


def test_halves_differ_in_size_from_8_rows_and_the_default_stream_takes_the_smaller():
    from mlx_hjepa.train.step import first_half_rows

    for batch in range(2, 70):
        first = first_half_rows(batch)
        assert 1 <= first <= batch - first
        if batch >= 8:
            assert first < batch - first <= first + 2
    assert first_half_rows(32) == 15 and first_half_rows(33) == 16


def test_the_eval_window_widens_only_for_two_streams_and_keeps_a_user_value(monkeypatch):
    monkeypatch.delenv(_streams.BFS_WIDTH_ENV, raising=False)
    monkeypatch.setattr(_streams.mx, "is_available", lambda device: False)
    monkeypatch.setattr(_streams, "planned", lambda device=None: "disabled")
    assert not _streams.widen_eval_window() and _streams.BFS_WIDTH_ENV not in os.environ
    monkeypatch.setattr(_streams, "planned", lambda device=None: "two")
    assert _streams.widen_eval_window() and os.environ[_streams.BFS_WIDTH_ENV] == "200"
    monkeypatch.setenv(_streams.BFS_WIDTH_ENV, "50")
    assert not _streams.widen_eval_window() and os.environ[_streams.BFS_WIDTH_ENV] == "50"
    monkeypatch.delenv(_streams.BFS_WIDTH_ENV)
    monkeypatch.setattr(_streams.mx, "is_available", lambda device: True)  # a GPU build: runs default to the GPU
    assert not _streams.widen_eval_window()


def test_the_training_command_widens_it_before_training():
    code = ("import os; from mlx_hjepa.train.__main__ import main; "
            "main(['configs/quickstart.yaml', '--dry-run']); print('WIDTH', os.environ.get('MLX_BFS_MAX_WIDTH'))")
    env = {k: v for k, v in os.environ.items() if k != _streams.BFS_WIDTH_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env).stdout
    expected = "200" if _streams.planned(mx.cpu) == "two" and not mx.is_available(mx.gpu) else "None"
    assert f"WIDTH {expected}" in out, out[-2000:]


def test_a_job_of_several_processes_keeps_one_stream(monkeypatch):
    class Group:
        def size(self):
            return 2

    monkeypatch.setattr(_streams, "planned", lambda device=None: "two")
    from helpers import tiny_schedules
    from mlx_hjepa.train.step import StepOptions, TrainStep

    step = TrainStep(tiny_hjepa(), tiny_schedules(), StepOptions(hierarchy_weights=(1.0, 0.5)), group=Group())
    assert step.side_stream is None

"""device: auto takes the GPU when MLX has one; the CUDA hint appears only beside an unused NVIDIA GPU.
No GPU here: the selection logic runs against mocked availability."""

import mlx.core as mx
import pytest

from mlx_hjepa import config as C
from mlx_hjepa import devices, info


@pytest.mark.parametrize("name, has_gpu, picked", [("auto", True, "gpu"), ("auto", False, "cpu"),
                                                   ("gpu", True, "gpu"), ("cpu", True, "cpu"), ("cpu", False, "cpu")])
def test_pick_device(name, has_gpu, picked):
    assert devices.pick_device(name, has_gpu=has_gpu) == picked


def test_config_spellings_reach_pick_device_as_gpu():
    for spelling in ("cuda", "mps", "metal", "gpu"):
        cfg = C.load_config({"data": {"dataset": "synthetic"}, "device": spelling})
        assert devices.pick_device(cfg.device, has_gpu=True) == "gpu"


def test_gpu_without_a_gpu_backend_is_one_sentence_with_the_cuda_hint(monkeypatch):
    monkeypatch.setattr(devices, "gpu_available", lambda: False)
    monkeypatch.setattr(devices, "nvidia_gpu_present", lambda: True)
    with pytest.raises(devices.DeviceError, match=r"no GPU backend.*mlx-hjepa\[cuda\]"):
        devices.pick_device("gpu")
    monkeypatch.setattr(devices, "nvidia_gpu_present", lambda: False)
    with pytest.raises(devices.DeviceError) as err:
        devices.pick_device("gpu")
    assert "cuda]" not in str(err.value)  # no NVIDIA GPU: no advice to install CUDA


def test_info_reports_the_auto_device_and_the_hint(monkeypatch):
    monkeypatch.setattr(devices, "gpu_available", lambda: False)
    monkeypatch.setattr(devices, "nvidia_gpu_present", lambda: True)
    monkeypatch.setattr(info, "pick_device", lambda name: devices.pick_device(name, has_gpu=False))
    monkeypatch.setattr(info, "unused_gpu_hint", devices.unused_gpu_hint)
    report = info.collect(measure=False)
    assert report["device_auto"] == "cpu" and "mlx-hjepa[cuda]" in report["gpu_hint"]
    assert "mlx-hjepa[cuda]" in info.format_report(report)
    monkeypatch.setattr(info, "pick_device", lambda name: devices.pick_device(name, has_gpu=True))
    monkeypatch.setattr(devices, "gpu_available", lambda: True)
    report = info.collect(measure=False)
    assert report["device_auto"] == "gpu" and report["gpu_hint"] == ""


def test_use_device_sets_the_default_device():
    before = mx.default_device()
    try:
        assert devices.use_device("cpu") == "cpu" and mx.default_device() == mx.cpu
    finally:
        mx.set_default_device(before)


def test_info_warns_when_two_mlx_backends_share_libmlx(monkeypatch):
    monkeypatch.setattr(info, "backend_packages", lambda: ["mlx-cpu 0.32.4", "mlx-cuda-12 0.32.4"])
    assert "share mlx/lib/libmlx.so" in info.format_report(info.collect(measure=False))
    monkeypatch.setattr(info, "backend_packages", lambda: ["mlx-cpu 0.32.4"])
    assert "share mlx/lib/libmlx.so" not in info.format_report(info.collect(measure=False))

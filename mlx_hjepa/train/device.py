"""Which MLX device a run uses (config key `device`), with the warnings that go with it."""

import warnings

import mlx.core as mx


class DeviceError(RuntimeError):
    """The config asks for a device this MLX build does not have."""


def select_device(cfg):
    if cfg.device == "cpu":
        mx.set_default_device(mx.cpu)
    elif cfg.device == "gpu":
        if not mx.is_available(mx.gpu):
            raise DeviceError("device is 'gpu' (mps/cuda) but this MLX build has no GPU backend; "
                              "set device: cpu or auto.")
        mx.set_default_device(mx.gpu)
    if cfg.training.use_amp and mx.default_device() == mx.cpu:
        warnings.warn("training.use_amp (bf16) on MLX's CPU backend is 6-9x slower than fp32; "
                      "set training.use_amp: false for CPU runs.", stacklevel=2)

"""mlx-hjepa: hierarchical I-JEPA pretraining of Vision Transformers in MLX."""

# Must run before anything imports mlx.core: on Linux it binds MLX's CPU backend to a fast BLAS.
from ._blas import preload_blas as _preload_blas

_preload_blas()

__version__ = "0.1.0"


def __getattr__(name):
    # lazy: importing the package must not import mlx.core before the BLAS preload above
    if name == "load_encoder":
        from .rundir import load_encoder

        return load_encoder
    raise AttributeError(f"module 'mlx_hjepa' has no attribute {name!r}")

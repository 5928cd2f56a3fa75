import os

os.environ.setdefault("MLX_ENABLE_TF32", "0")  # exact fp32 matmuls in comparisons (MLX_NOTES)

import mlx_hjepa  # noqa: E402,F401  (preloads the fast BLAS before mlx.core)

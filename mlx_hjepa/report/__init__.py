"""See what a run learned: a static HTML report, and images written during training.

    python -m mlx_hjepa.report RUN_DIR            # RUN_DIR/report/index.html
"""

from .build import write_report
from .live import ImageLogger, image_logger, write_attention_images, write_mask_images

__all__ = ["ImageLogger", "image_logger", "write_attention_images", "write_mask_images", "write_report"]

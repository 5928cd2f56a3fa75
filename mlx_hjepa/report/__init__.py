"""See what a run learned: a static HTML report.

    python -m mlx_hjepa.report RUN_DIR            # RUN_DIR/report/index.html
"""

from .build import write_report

__all__ = ["write_report"]

"""Measuring the product: one edit next to the dense model (``edit``; ``fill_edit`` for a saved
``FluxFillPipeline``), the mask suite, the built-in bench (``settings``, ``latency``, ``fidelity``,
assembled by ``bench``) and the bench of a user's own Fill pipeline (``pipeline_bench`` on
``edit_set``, ``phases``, ``paired``; ``pipeline_report``), progress with an ETA (``progress``),
the planner sweep, the context probe (``probe``) and equal-budget ablations of the token selection
(``ablation``), metrics, FLOP counts, reports, and ``validate`` (engines against torch, through
polygraphy; import it from ``evaluation.validate``).

May import every other stage; runtime code never imports this one.
"""

from .bench import run_bench
from .edit import EditError, comparison_picture, run_edit
from .fill_edit import run_fill_edit
from .masks import CATEGORY_RATIOS, mask_suite, write_suite
from .metrics import psnr, ssim
from .pipeline_bench import PipelineBenchSettings, run_pipeline_bench
from .report import markdown, write_report
from .settings import BenchError, BenchSettings
from .sweep import run_sweep, sweep_markdown

__all__ = [
    "CATEGORY_RATIOS", "BenchError", "BenchSettings", "EditError", "PipelineBenchSettings", "comparison_picture", "markdown",
    "mask_suite", "psnr", "run_bench", "run_edit", "run_fill_edit", "run_pipeline_bench", "run_sweep", "ssim",
    "sweep_markdown", "write_report", "write_suite",
]

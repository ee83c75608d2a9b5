"""Token planning: which tokens of an image the DiT sees for one edit.

Owns the planner (input checks and mask pooling, frequency score, selection), buckets,
calibration, the planner as ONNX and the selection picture (Pillow). Torch and numpy otherwise:
never imports diffusers, onnx at import time, a backend, or another hilo_export subpackage
(they all import this one).
"""

from .buckets import FULL, K_AXIS, Bucket, BucketError, format_buckets, parse_buckets
from .calibration import Calibration, calibrate, read_masks
from .inputs import PlanError
from .onnx_planner import planner_model, write_planner
from .plan import (
    DROPPED,
    FILL,
    HIGH_FREQ,
    MASK,
    LowFreqLayout,
    PlannerConfig,
    TokenPlan,
    mandatory_tokens,
    mask_from_file,
    plan_batch,
    plan_tokens,
)

__all__ = [
    "DROPPED", "FILL", "FULL", "HIGH_FREQ", "K_AXIS", "MASK", "Bucket", "BucketError", "Calibration", "LowFreqLayout",
    "PlanError", "PlannerConfig", "TokenPlan", "calibrate", "format_buckets", "mandatory_tokens", "mask_from_file",
    "parse_buckets", "plan_batch", "plan_tokens", "planner_model", "read_masks", "selection_picture", "write_planner",
]


def __getattr__(name: str):
    if name == "selection_picture":  # Pillow only when a picture is drawn
        from .picture import selection_picture

        return selection_picture
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

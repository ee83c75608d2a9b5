"""hilo-export: HiLo-Token compression for DiT image editing, exported for serving."""

from typing import Any

from .plan import LowFreqLayout, PlanError, PlannerConfig, TokenPlan, plan_batch, plan_tokens
from .transformer import HiLoTransformer


def apply(pipe: Any, runtime: Any, fill: str | None = None) -> Any:
    """Swap a diffusers pipeline's transformer for HiLo engines; ``.restore()`` undoes it (see ``pipeline.apply``)."""
    from .pipeline import apply as apply_to_pipeline

    return apply_to_pipeline(pipe, runtime, fill)


__all__ = ["HiLoTransformer", "LowFreqLayout", "PlanError", "PlannerConfig", "TokenPlan", "apply", "plan_batch", "plan_tokens"]
__version__ = "0.1.0"

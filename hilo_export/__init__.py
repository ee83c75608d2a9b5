"""hilo-export: HiLo-Token compression for DiT image editing, exported for serving."""

from .plan import LowFreqLayout, PlanError, PlannerConfig, TokenPlan, plan_batch, plan_tokens
from .transformer import HiLoTransformer

__all__ = ["HiLoTransformer", "LowFreqLayout", "PlanError", "PlannerConfig", "TokenPlan", "plan_batch", "plan_tokens"]
__version__ = "0.1.0"

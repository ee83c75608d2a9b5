"""Serving a built folder from Python: ``HiLoRuntime`` (load, verify, plan, pick the bucket,
run) and its diffusers integration (``apply`` swaps a pipeline's transformer for the engines).

Imports ``planning``, ``model`` and the manifest and backends of ``export``; never re-exports.
"""

from .fill import FillPlanningError
from .pipeline import Applied, EngineTransformer, PlannedTransformer, apply
from .runtime import HiLoRuntime, RuntimeInputError

__all__ = ["Applied", "EngineTransformer", "FillPlanningError", "HiLoRuntime", "PlannedTransformer", "RuntimeInputError", "apply"]

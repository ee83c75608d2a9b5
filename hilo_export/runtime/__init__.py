"""Serving a built folder from Python: ``HiLoRuntime`` (load, verify, plan, pick the bucket,
run on the caller's device) and its diffusers integration (``apply`` swaps a pipeline's transformer
for the engines).

Imports ``planning``, ``model`` and ``folder`` (manifest, backends, dtypes); never ``export``.
"""

from .fill import FillPlanningError
from .pipeline import Applied, EngineTransformer, PlannedTransformer, apply
from .runtime import HiLoRuntime, RuntimeInputError

__all__ = ["Applied", "EngineTransformer", "FillPlanningError", "HiLoRuntime", "PlannedTransformer", "RuntimeInputError", "apply"]

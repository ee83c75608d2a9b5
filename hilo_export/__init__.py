"""hilo-export: HiLo-Token compression for DiT image editing, exported for serving.

Stages, one subpackage each, imports flowing one way: ``planning`` <- ``model`` <- ``export``
<- ``runtime`` <- ``reference`` <- ``evaluation``, ``serving`` and ``cli``. The public API is here.
"""

# before the imports: export.builder records it in every manifest
__version__ = "0.1.0"

from .model import HiLoTransformer  # noqa: E402
from .planning import LowFreqLayout, PlanError, PlannerConfig, TokenPlan, plan_batch, plan_tokens  # noqa: E402
from .runtime import HiLoRuntime, apply  # noqa: E402

__all__ = ["HiLoRuntime", "HiLoTransformer", "LowFreqLayout", "PlanError", "PlannerConfig", "TokenPlan", "apply", "plan_batch", "plan_tokens"]

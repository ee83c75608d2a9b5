"""hilo-export: HiLo-Token compression for DiT image editing, exported for serving.

Stages, one subpackage each, imports flowing one way: ``planning`` <- ``model`` <- ``export``
<- ``runtime`` <- ``reference`` <- ``evaluation``, ``serving`` and ``cli``. The public API is here.
"""

import importlib

# export.builder records it in every manifest
__version__ = "0.1.0"

# The public API, loaded on first use: importing one stage (``hilo_export.folder.backends.torch``
# for a GPU check on a machine with torch and little else) then loads only that stage.
_API = {"HiLoTransformer": "model", "LowFreqLayout": "planning", "PlanError": "planning", "PlannerConfig": "planning",
        "TokenPlan": "planning", "plan_batch": "planning", "plan_tokens": "planning", "HiLoRuntime": "runtime",
        "apply": "runtime"}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'hilo_export' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])

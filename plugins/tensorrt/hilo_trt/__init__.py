"""TensorRT plugins for the hilo ONNX ops (hilo::TokenGather, hilo::TokenScatter).

``register()`` makes them known to TensorRT in this process; ``hilo-export build --backend trt
--plugins`` calls it before parsing. Importing this package needs neither TensorRT nor
Triton: layout.py (shapes, grids, kernel arguments) is pure Python, kernels.py needs Triton,
registration.py needs both.
"""

from __future__ import annotations

import importlib.util

from .layout import GATHER_ID, SCATTER_ID

PLUGIN_IDS = (GATHER_ID, SCATTER_ID)
# TensorRT's Python plugin API gained ahead-of-time implementations (trtp.aot_impl) in 10.9;
# the ONNX parser prefers a registered plugin over a node's function body since 10.7.
MIN_TENSORRT = "10.9"


class PluginUnavailable(RuntimeError):
    """The plugins cannot be registered here; the message says what to install or change."""


def register() -> tuple[str, ...]:
    """Register both plugins with TensorRT (idempotent); returns their ids."""
    missing = [name for name in ("tensorrt", "triton") if importlib.util.find_spec(name) is None]
    if missing:
        raise PluginUnavailable(
            f"the hilo TensorRT plugins need {' and '.join(missing)}, not installed here: run inside NVIDIA's "
            f"TensorRT or PyTorch container (TensorRT {MIN_TENSORRT}+, Triton from the container's torch), "
            "or build without --plugins (TensorRT then inlines the ONNX function bodies)"
        )
    import tensorrt

    if importlib.util.find_spec("tensorrt.plugin") is None or not hasattr(tensorrt, "QuickPluginCreationRequest"):
        raise PluginUnavailable(
            f"TensorRT {tensorrt.__version__} has no ahead-of-time Python plugins (tensorrt.plugin.aot_impl); "
            f"use TensorRT {MIN_TENSORRT} or newer, or build without --plugins"
        )
    from . import registration  # noqa: F401  (registers on first import)

    return PLUGIN_IDS

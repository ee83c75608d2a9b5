"""One adapter per model family: how a family's stock forward runs on a HiLo sequence.

The contract is ``base.Adapter``; adding a family means one file here, registered in ``ADAPTERS``,
plus a tiny model for it in the tests.
"""

from __future__ import annotations

import torch

from ..loading import ModelError
from .base import Adapter, DeclaredInputs, Input
from .flux import FluxAdapter

ADAPTERS: tuple[Adapter, ...] = (FluxAdapter(),)


def adapter_for(model: torch.nn.Module) -> Adapter:
    name = type(model).__name__
    for adapter in ADAPTERS:
        if name in adapter.model_classes:
            return adapter
    supported = ", ".join(cls for adapter in ADAPTERS for cls in adapter.model_classes)
    raise ModelError(f"no HiLo adapter for {name}; supported models: {supported}")


__all__ = ["ADAPTERS", "Adapter", "DeclaredInputs", "Input", "FluxAdapter", "adapter_for"]

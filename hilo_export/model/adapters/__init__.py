"""One adapter per model family: how a family's stock forward runs on a HiLo sequence."""

from __future__ import annotations

import torch

from .flux import FluxAdapter

ADAPTERS = (FluxAdapter(),)


def adapter_for(model: torch.nn.Module):
    name = type(model).__name__
    for adapter in ADAPTERS:
        if name in adapter.model_classes:
            return adapter
    supported = ", ".join(cls for adapter in ADAPTERS for cls in adapter.model_classes)
    raise TypeError(f"no HiLo adapter for {name}; supported models: {supported}")

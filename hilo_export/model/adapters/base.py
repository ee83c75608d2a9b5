"""The adapter contract: what every model family tells the rest of the toolchain.

A family declares its forward inputs once, as data (``Input``); the engine input names, the
inputs split along the batch and the example feeds of an export are all derived from that table
(``DeclaredInputs``). Only what is really family-specific stays code: ``predict`` (the stock
forward on a HiLo sequence) and ``export_mode`` (patches that make the traced graph engine-friendly).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol, Union

import torch

from ..sequence import PlanTensors

Dim = Union[str, int]  # "batch", "tokens" (the full grid), "text", a config field name, or a fixed size
Example = Union[str, float]  # "normal", "uniform", "grid_ids", "zeros", or a constant


class Input(NamedTuple):
    """One forward input of the engines, in engine order."""

    name: str
    dims: tuple[Dim, ...]
    when: str | None = None  # a boolean config field that turns the input on (Flux's guidance_embeds)
    example: Example = "normal"  # how export makes an example value (random draws in table order, seed 0)
    model_dtype: bool = True  # False: always float32 (positions)


class Adapter(Protocol):
    family: str
    model_classes: tuple[str, ...]  # matched by class name, so finding an adapter imports no diffusers
    inputs: tuple[Input, ...]
    unsupported_inputs: tuple[str, ...]  # forward arguments HiLo cannot honour; refused when given

    def out_channels(self, model: torch.nn.Module) -> int: ...

    def attention_heads(self, model: torch.nn.Module) -> int: ...

    def predict(self, model: torch.nn.Module, plan: PlanTensors, n_tokens: int, inputs: dict[str, Any]) -> torch.Tensor:
        """Predictions for the HiLo sequence, [B, L + K, out_channels]."""

    def export_mode(self, model: torch.nn.Module) -> AbstractContextManager[None]:
        """Patches in force while the model is traced for export (on this instance only)."""

    def input_names(self, model: torch.nn.Module) -> list[str]: ...

    @property
    def batched_inputs(self) -> tuple[str, ...]: ...

    def input_shapes(self, model: torch.nn.Module, batch: int, grid: tuple[int, int],
                     text_len: int) -> dict[str, tuple[int, ...]]: ...

    def example_inputs(self, model: torch.nn.Module, batch: int, grid: tuple[int, int], text_len: int,
                       dtype: torch.dtype) -> dict[str, torch.Tensor]: ...


class DeclaredInputs:
    """The parts of the contract that follow from the ``inputs`` table."""

    inputs: tuple[Input, ...] = ()

    def active_inputs(self, model: torch.nn.Module) -> list[Input]:
        return [i for i in self.inputs if i.when is None or getattr(model.config, i.when)]

    def input_names(self, model: torch.nn.Module) -> list[str]:
        """The full-grid engine inputs, in engine order (example_inputs gives them in this order)."""
        return [i.name for i in self.active_inputs(model)]

    @property
    def batched_inputs(self) -> tuple[str, ...]:
        """Forward inputs with a batch axis: a batch with several plans is split along them."""
        return tuple(i.name for i in self.inputs if i.dims[:1] == ("batch",))

    def input_shapes(self, model: torch.nn.Module, batch: int, grid: tuple[int, int], text_len: int) -> dict[str, tuple[int, ...]]:
        """Every active input's shape, in engine order: for tensors without values (meta-device FLOP counts)."""
        return {spec.name: self.input_shape(model, spec, batch, grid, text_len) for spec in self.active_inputs(model)}

    def input_shape(self, model: torch.nn.Module, spec: Input, batch: int, grid: tuple[int, int], text_len: int) -> tuple[int, ...]:
        sizes = {"batch": batch, "tokens": grid[0] * grid[1], "text": text_len}
        return tuple(d if isinstance(d, int) else sizes[d] if d in sizes else int(getattr(model.config, d)) for d in spec.dims)

    def example_inputs(self, model: torch.nn.Module, batch: int, grid: tuple[int, int], text_len: int,
                       dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Full-grid engine inputs in engine order (the plan tensors are added by the exporter)."""
        g = torch.Generator().manual_seed(0)
        feeds = {}
        for spec in self.active_inputs(model):
            shape = self.input_shape(model, spec, batch, grid, text_len)
            kind = dtype if spec.model_dtype else torch.float32
            if spec.example == "normal":
                value = torch.randn(shape, generator=g, dtype=kind)
            elif spec.example == "uniform":
                value = torch.rand(shape, generator=g, dtype=kind)
            elif spec.example == "zeros":
                value = torch.zeros(shape, dtype=kind)
            elif spec.example == "grid_ids":  # [tokens, 3]: (0, row, column) of each token, row-major
                h, w = grid
                value = torch.zeros(shape, dtype=kind)
                value[:, 1] = torch.arange(h).repeat_interleave(w)
                value[:, 2] = torch.arange(w).repeat(h)
            else:
                value = torch.full(shape, float(spec.example), dtype=kind)
            feeds[spec.name] = value
        return feeds

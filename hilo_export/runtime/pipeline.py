"""HiLo engines in place of a diffusers pipeline's transformer.

``apply(pipe, runtime)`` swaps the pipeline's transformer (the reference pipeline's, or
diffusers' ``FluxFillPipeline``'s) for ``EngineTransformer``, which runs the built engines,
and puts the stock one back on ``restore()``. ``PlannedTransformer`` is the same on torch,
without engines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..model.transformer import HiLoTransformer
from ..planning.buckets import FULL
from ..planning.plan import PlannerConfig, TokenPlan, plan_tokens
from .runtime import HiLoRuntime


class EngineTransformer(torch.nn.Module):
    """Called like the stock diffusers transformer; runs one bucket's engine of a ``HiLoRuntime``.

    ``prepare(image, mask)`` plans the edit once, before the denoising loop; every call then
    runs the planned bucket (``dense=True`` plans the ``full`` bucket: the same engines,
    without compression). Dropped tokens get ``fill``: ``"zero"`` (the reference model: its
    pipeline overwrites every known pixel, and dropped tokens hold only known pixels),
    ``"lowfreq"`` (their block's low-frequency prediction) otherwise.
    """

    def __init__(self, runtime: HiLoRuntime, stock: torch.nn.Module, fill: str = "lowfreq"):
        super().__init__()
        if fill not in ("zero", "lowfreq"):
            raise ValueError(f"fill must be 'zero' or 'lowfreq', got {fill!r}")
        self.runtime = runtime
        self.config = stock.config
        self.fill = fill
        self.plan: TokenPlan | None = None
        self._inputs = [v["name"] for v in runtime.manifest["graphs"]["full"]["inputs"]]
        self._dtype = stock.dtype

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def prepare(self, image: np.ndarray, mask: np.ndarray, dense: bool = False) -> TokenPlan:
        self.plan = self.runtime.plan(image, np.asarray(mask) > 0, dense=dense)
        return self.plan

    def forward(self, hidden_states: torch.Tensor, return_dict: bool = True, joint_attention_kwargs=None, **kwargs: Any):
        if self.plan is None:
            raise RuntimeError("call prepare(image, mask) on the pipeline's transformer before running it")
        if joint_attention_kwargs:
            raise ValueError("joint_attention_kwargs (e.g. LoRA scale) cannot change a built engine; fuse them before export")
        feeds = {name: kwargs[name] for name in self._inputs if name not in ("hidden_states", "keep_indices", "fill")
                 and kwargs.get(name) is not None}
        fill = _zero_fill(hidden_states, self.config) if self.fill == "zero" else None
        output = self.runtime(plan=self.plan, fill=fill, hidden_states=hidden_states, **feeds)
        return (output,) if not return_dict else _Output(output)


class PlannedTransformer(torch.nn.Module):
    """The torch counterpart of ``EngineTransformer``: any planner settings, no engines to build.

    Used where engines per setting would be too slow to build (the planner sweep).
    """

    def __init__(self, model: torch.nn.Module, token_size: int, buckets: str, config: PlannerConfig, fill: str = "lowfreq"):
        super().__init__()
        self.model = model
        self.hilo = HiLoTransformer(model)
        self.config = model.config
        self.token_size, self.buckets, self.planner = token_size, buckets, config
        self.fill = fill
        self.plan: TokenPlan | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def prepare(self, image: np.ndarray, mask: np.ndarray, dense: bool = False) -> TokenPlan:
        self.plan = plan_tokens(image, np.asarray(mask) > 0, self.token_size, FULL if dense else self.buckets, self.planner)
        return self.plan

    def forward(self, hidden_states: torch.Tensor, return_dict: bool = True, **kwargs: Any):
        if self.plan is None:
            raise RuntimeError("call prepare(image, mask) on the pipeline's transformer before running it")
        if self.plan.bucket == FULL:
            return self.model(hidden_states=hidden_states, return_dict=return_dict, **kwargs)
        fill = _zero_fill(hidden_states, self.config) if self.fill == "zero" else None
        return self.hilo(hidden_states=hidden_states, plan=self.plan, fill=fill, return_dict=return_dict, **kwargs)


def _zero_fill(hidden_states: torch.Tensor, config: Any) -> torch.Tensor:
    return torch.zeros(*hidden_states.shape[:2], config.out_channels or config.in_channels)


@dataclass
class _Output:
    sample: torch.Tensor


@dataclass
class Applied:
    """What ``apply`` changed; ``restore()`` (or leaving the ``with`` block) undoes it."""

    pipe: Any
    stock: torch.nn.Module
    transformer: EngineTransformer

    def restore(self) -> None:
        self.pipe.transformer = self.stock

    def __enter__(self) -> "Applied":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()


def apply(pipe: Any, runtime: HiLoRuntime, fill: str | None = None) -> Applied:
    """Swap ``pipe.transformer`` for the runtime's engines; returns a handle whose ``restore()`` undoes it.

    Before each edit call ``handle.transformer.prepare(image, mask)`` (``ReferenceInpaintPipeline``
    does it itself), then call the pipeline as usual.
    """
    stock = pipe.transformer
    if isinstance(stock, EngineTransformer):
        raise ValueError("this pipeline already runs HiLo engines; restore() it first")
    fill = fill or getattr(pipe, "hilo_fill", "lowfreq")
    engine = EngineTransformer(runtime, stock, fill)
    pipe.transformer = engine
    return Applied(pipe, stock, engine)

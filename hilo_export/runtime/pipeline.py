"""HiLo engines in place of a diffusers pipeline's transformer.

``apply(pipe, runtime)`` swaps the pipeline's transformer (the reference pipeline's, or
diffusers' ``FluxFillPipeline``'s) for ``EngineTransformer``, which runs the built engines,
and puts the stock one back on ``restore()``. ``PlannedTransformer`` is the same on torch,
without engines. A ``FluxFillPipeline`` is also planned by itself from each call's own image
and mask (``fill.py``); other pipelines call ``prepare(image, mask)`` before their loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import HiLoError
from ..model.adapters import adapter_for
from ..model.engine import ENGINE_INPUTS
from ..model.transformer import HiLoTransformer
from ..planning.buckets import FULL
from ..planning.plan import PlannerConfig, TokenPlan, plan_tokens
from .fill import FillPlanning, is_fill_pipeline
from .runtime import HiLoRuntime, RuntimeInputError

FILLS = ("zero", "lowfreq", "known")


class PipelineError(HiLoError, RuntimeError):
    """The HiLo transformer was called before it could run (no plan, no known latents); the message says what to call first."""


class _PlannedStep(torch.nn.Module):
    """What both HiLo transformers share: the plan of the current edit and the fill of dropped tokens.

    ``fill`` says what tokens without a prediction get: ``"zero"`` (the reference model: its
    pipeline overwrites every known pixel, and dropped tokens hold only known pixels),
    ``"lowfreq"`` (their block's low-frequency prediction), or ``"known"`` (the velocity that
    carries them from ``x_t`` straight onto the known image's latents ``x0``: in flow matching
    ``x_t = (1 - s) x0 + s eps``, so ``(x_t - x0) / s`` lands them on ``x0`` at ``s = 0``; set
    ``known`` to ``x0``, packed as the output, ``[b, N, C]``). For Fill-style models the noisy
    latents are the first ``C`` channels of ``hidden_states`` (diffusers' ``FluxFillPipeline``
    concatenates latents, masked-image latents and mask).
    """

    def __init__(self, out_channels: int, fill: str):
        super().__init__()
        if fill not in FILLS:
            raise RuntimeInputError(f"fill must be one of {', '.join(map(repr, FILLS))}, got {fill!r}")
        self.fill = fill
        self.out_channels = out_channels
        self.plan: TokenPlan | None = None
        self.known: torch.Tensor | None = None

    def _plan_for_call(self) -> TokenPlan:
        if self.plan is None:
            raise PipelineError(
                "no plan for this call: call prepare(image, mask) on the pipeline's transformer before running it "
                "(a FluxFillPipeline under apply plans by itself from image= and mask_image=)"
            )
        return self.plan

    def _fill_for(self, hidden_states: torch.Tensor, timestep: torch.Tensor | None) -> torch.Tensor | None:
        batch, n_tokens = hidden_states.shape[:2]
        if self.fill == "zero":
            return hidden_states.new_zeros(batch, n_tokens, self.out_channels)
        if self.fill == "lowfreq":
            return None
        if self.known is None or timestep is None:
            raise PipelineError("fill='known' needs the known image's latents (apply sets them on a FluxFillPipeline)")
        known = _rows(self.known, batch).to(hidden_states.dtype)
        sigma = timestep.reshape(-1, 1, 1).to(hidden_states.dtype)
        noisy = hidden_states[..., : self.out_channels]
        # the last sigma of a schedule is above 0; guard the division anyway
        return torch.where(sigma > 0, (noisy - known) / sigma.clamp_min(1e-12), torch.zeros_like(noisy))


class EngineTransformer(_PlannedStep):
    """Called like the stock diffusers transformer; runs one bucket's engine of a ``HiLoRuntime``.

    ``prepare(image, mask)`` plans the edit once, before the denoising loop; every call then
    runs the planned bucket (``dense=True`` plans the ``full`` bucket: the same engines,
    without compression). A batch larger than the engines' runs as several engine calls on
    the same plan.
    """

    def __init__(self, runtime: HiLoRuntime, stock: torch.nn.Module, fill: str = "lowfreq"):
        super().__init__(stock.config.out_channels or stock.config.in_channels, fill)
        self.runtime = runtime
        self.config = stock.config
        self.token_size = runtime.token_size
        self._inputs = [v["name"] for v in runtime.manifest["graphs"]["full"]["inputs"]]
        self._batched = adapter_for(stock).batched_inputs
        self._dtype = stock.dtype

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        """Where the engines run (diffusers puts the step's tensors here): the CPU, or the GPU
        of ONNX Runtime's CUDA provider, TensorRT or the torch backend."""
        return self.runtime.device

    def prepare(self, image: np.ndarray, mask: np.ndarray, dense: bool = False) -> TokenPlan:
        self.plan = self.runtime.plan(image, np.asarray(mask) > 0, dense=dense)
        return self.plan

    def forward(self, hidden_states: torch.Tensor, return_dict: bool = True, joint_attention_kwargs=None, **kwargs: Any):
        plan = self._plan_for_call()
        if joint_attention_kwargs:
            raise RuntimeInputError("joint_attention_kwargs (e.g. LoRA scale) cannot change a built engine; fuse them before export")
        feeds = {name: kwargs[name] for name in self._inputs if name != "hidden_states" and name not in ENGINE_INPUTS
                 and kwargs.get(name) is not None}
        text, text_len = kwargs.get("encoder_hidden_states"), self.runtime.manifest["text_len"]
        if text is not None and text.shape[1] != text_len:
            raise RuntimeInputError(
                f"the prompt embeddings have {text.shape[1]} tokens but the engines were built for {text_len}: call the "
                f"pipeline with max_sequence_length={text_len}, or build with --text-len {text.shape[1]}"
            )
        fill = self._fill_for(hidden_states, kwargs.get("timestep"))
        batch, engine_batch = hidden_states.shape[0], self.runtime.manifest["batch"]
        if batch % engine_batch:
            raise RuntimeInputError(
                f"a batch of {batch} cannot run on engines built for batch {engine_batch}: use a multiple of "
                f"{engine_batch}, or build with --batch {batch}"
            )
        outputs = []
        for start in range(0, batch, engine_batch):  # one engine call per engine-sized slice, same plan
            rows = slice(start, start + engine_batch)
            chunk = {name: value[rows] if name in self._batched and _batched(value, batch) else value
                     for name, value in feeds.items()}
            outputs.append(self.runtime(plan=plan, fill=None if fill is None else fill[rows],
                                        hidden_states=hidden_states[rows], **chunk))
        output = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
        return (output,) if not return_dict else _Output(output)


class PlannedTransformer(_PlannedStep):
    """The torch counterpart of ``EngineTransformer``: any planner settings, no engines to build.

    Used where engines per setting would be too slow to build (the planner sweep), and to run
    HiLo on a pipeline's own torch model: ``apply(pipe, PlannedTransformer(pipe.transformer, 16, "s,m,l"))``.
    """

    def __init__(self, model: torch.nn.Module, token_size: int, buckets: str, config: PlannerConfig | None = None,
                 fill: str = "lowfreq"):
        super().__init__(model.config.out_channels or model.config.in_channels, fill)
        self.model = model
        self.hilo = HiLoTransformer(model)
        self.config = model.config
        self.token_size, self.buckets, self.planner = token_size, buckets, config or PlannerConfig()

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device

    def prepare(self, image: np.ndarray, mask: np.ndarray, dense: bool = False) -> TokenPlan:
        self.plan = plan_tokens(image, np.asarray(mask) > 0, self.token_size, FULL if dense else self.buckets, self.planner)
        return self.plan

    def forward(self, hidden_states: torch.Tensor, return_dict: bool = True, **kwargs: Any):
        plan = self._plan_for_call()  # a full plan runs through HiLoTransformer too: every token, in order
        fill = self._fill_for(hidden_states, kwargs.get("timestep"))
        return self.hilo(hidden_states=hidden_states, plan=plan, fill=fill, return_dict=return_dict, **kwargs)


def _rows(value: torch.Tensor, batch: int) -> torch.Tensor:
    """``value`` for a batch of ``batch`` rows: as is, or repeated as diffusers repeats a batch (``cat([x] * k)``)."""
    if value.shape[0] == batch:
        return value
    if batch % value.shape[0]:
        raise RuntimeInputError(f"known latents for {value.shape[0]} rows cannot serve a batch of {batch}")
    return value.repeat(batch // value.shape[0], *([1] * (value.ndim - 1)))


def _batched(value: Any, batch: int) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch


@dataclass
class _Output:
    sample: torch.Tensor


@dataclass
class Applied:
    """What ``apply`` changed; ``restore()`` (or leaving the ``with`` block) undoes it.

    ``plan`` is the plan of the last call (or of the last ``prepare``). On a ``FluxFillPipeline``
    ``dense = True`` makes the following calls plan the ``full`` bucket (the uncompressed baseline).
    """

    pipe: Any
    stock: torch.nn.Module
    transformer: EngineTransformer | PlannedTransformer
    planning: FillPlanning | None = None

    @property
    def plan(self) -> TokenPlan | None:
        return self.transformer.plan

    @property
    def dense(self) -> bool:
        return bool(self.planning and self.planning.dense)

    @dense.setter
    def dense(self, value: bool) -> None:
        if self.planning is None:
            raise RuntimeInputError("dense applies to pipelines planned by apply (FluxFillPipeline); call prepare(..., dense=True)")
        self.planning.dense = value

    def restore(self) -> None:
        if self.planning is not None:
            self.planning.remove()
            self.planning = None
        self.pipe.transformer = self.stock

    def __enter__(self) -> "Applied":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()


def apply(pipe: Any, runtime: HiLoRuntime | PlannedTransformer, fill: str | None = None,
          composite: bool = False) -> Applied:
    """Run ``pipe``'s transformer with HiLo; returns a handle whose ``restore()`` (or ``with`` exit) undoes it.

    ``runtime`` is a built folder (``HiLoRuntime``: the engines) or a ``PlannedTransformer`` (torch).
    A ``FluxFillPipeline`` then plans every call from its own processed ``image`` and
    ``mask_image`` and gives dropped tokens the velocity onto the known image (``fill="known"``);
    ``composite=True`` also pastes the input back outside the mask, bit for bit. Other pipelines
    call ``handle.transformer.prepare(image, mask)`` before each edit (``ReferenceInpaintPipeline``
    does it itself)::

        with hilo_export.apply(pipe, HiLoRuntime.load("engines/fill")) as h:
            image = pipe(prompt="a cup", image=photo, mask_image=mask, height=1024, width=1024).images[0]
        print(h.plan.bucket)
    """
    stock = getattr(pipe, "transformer", None)
    if not isinstance(stock, torch.nn.Module) or not hasattr(stock, "config"):
        raise RuntimeInputError(
            f"apply needs a diffusers pipeline whose .transformer is its DiT (e.g. FluxFillPipeline); "
            f"{type(pipe).__name__} has {'no transformer' if stock is None else f'a transformer of type {type(stock).__name__}'}"
        )
    if not isinstance(runtime, (HiLoRuntime, PlannedTransformer)):
        raise RuntimeInputError(f"apply runs a HiLoRuntime (HiLoRuntime.load(folder)) or a PlannedTransformer; "
                                f"got {type(runtime).__name__}")
    if isinstance(stock, _PlannedStep):
        raise RuntimeInputError("this pipeline already runs HiLo; restore() it first")
    fill_pipeline = is_fill_pipeline(pipe)
    if composite and not fill_pipeline:
        raise RuntimeInputError(f"composite=True needs a FluxFillPipeline; {type(pipe).__name__} composites by itself or not at all")
    fill = fill or getattr(pipe, "hilo_fill", None) or ("known" if fill_pipeline else "lowfreq")
    if isinstance(runtime, PlannedTransformer):
        hilo = runtime
        if fill not in FILLS:
            raise RuntimeInputError(f"fill must be one of {', '.join(map(repr, FILLS))}, got {fill!r}")
        hilo.fill = fill
    else:
        hilo = EngineTransformer(runtime, stock, fill)
    planning = FillPlanning(pipe, hilo, composite) if fill_pipeline else None  # checks before anything changes
    if planning is not None:
        try:
            planning.install()
        except Exception:
            planning.remove()  # leave the pipeline as it was
            raise
    pipe.transformer = hilo
    return Applied(pipe, stock, hilo, planning)

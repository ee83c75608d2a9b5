"""Editing pipelines with HiLo engines in place of the transformer.

``ReferenceInpaintPipeline`` is a thin diffusers pipeline around the reference model and
diffusers' ``FlowMatchEulerDiscreteScheduler``. ``apply(pipe, runtime)`` swaps any such
pipeline's transformer (this one, or diffusers' ``FluxFillPipeline``) for
``EngineTransformer``, which runs the built engines, and puts the stock one back on
``restore()``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler

from . import reference as ref
from .buckets import FULL
from .plan import PlannerConfig, TokenPlan, plan_tokens
from .runtime import HiLoRuntime
from .transformer import HiLoTransformer


class EditInputError(ValueError):
    """An image or mask the pipeline cannot edit; the message says how to fix it."""


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


@dataclass
class EditResult:
    image: np.ndarray  # uint8 [H, W, 3]: the input outside the mask, exactly
    step_seconds: list[float] = field(default_factory=list)  # transformer time per step
    total_seconds: float = 0.0  # the whole edit, planning included
    plan: TokenPlan | None = None


class ReferenceInpaintPipeline(DiffusionPipeline):
    """Inpainting with the reference model: Euler flow matching, known pixels kept on their trajectory."""

    hilo_fill = "zero"  # dropped tokens are all known pixels, which every step overwrites

    def __init__(self, transformer: torch.nn.Module, scheduler: FlowMatchEulerDiscreteScheduler):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)

    @classmethod
    def from_reference(cls, model: torch.nn.Module | None = None) -> "ReferenceInpaintPipeline":
        if model is None:
            try:
                model = ref.load()
            except FileNotFoundError as err:
                raise EditInputError(str(err)) from None
        return cls(model, FlowMatchEulerDiscreteScheduler(shift=1.0))

    @torch.no_grad()
    def __call__(self, image: np.ndarray, mask: np.ndarray, steps: int = 8, seed: int = 0, dense: bool = False,
                 progress: bool = True) -> EditResult:
        start = time.perf_counter()
        image, hole_pixels = check_edit_inputs(image, mask)
        if steps < 1:
            raise EditInputError(f"steps must be at least 1, got {steps}")
        plan = None
        if hasattr(self.transformer, "prepare"):  # a HiLo transformer: plan this edit once
            plan = self.transformer.prepare(image, hole_pixels, dense=dense)
        pixels = ref.to_tensor(image)
        hole = torch.from_numpy(hole_pixels).float()[None, None]
        grid = (image.shape[0] // ref.TOKEN_SIZE, image.shape[1] // ref.TOKEN_SIZE)
        cond, prefill = ref.condition(pixels, hole)
        known = ref.pack(pixels)
        unknown = ref.pack(hole.expand_as(pixels)) > 0
        noise = torch.randn(known.shape, generator=torch.Generator().manual_seed(seed))

        self.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps).tolist())
        x = noise.clone()
        step_seconds = []
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps) if progress else self.scheduler.timesteps):
            sigma = float(self.scheduler.sigmas[i])
            # known pixels follow their exact noisy trajectory: only the hole is generated
            x = torch.where(unknown, x, (1 - sigma) * known + sigma * noise)
            tick = time.perf_counter()
            residual = self.transformer(**ref.model_inputs(x, cond, torch.tensor([sigma]), grid), return_dict=False)[0]
            step_seconds.append(time.perf_counter() - tick)
            x = self.scheduler.step(ref.velocity(residual, x, prefill, sigma), t, x, return_dict=False)[0]
        edited = ref.to_uint8(ref.unpack(x, grid))
        out = np.where(hole_pixels[..., None] > 0, edited, image)  # outside the mask: the input, bit for bit
        return EditResult(out, step_seconds, time.perf_counter() - start, plan)


def check_edit_inputs(image: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise EditInputError(f"image must be uint8 [H, W, 3] RGB; got {image.dtype} {list(image.shape)}")
    if mask.shape != image.shape[:2]:
        raise EditInputError(f"mask is {list(mask.shape)} but the image is {list(image.shape[:2])}: give a mask of the image's size")
    h, w = image.shape[:2]
    if h % ref.TOKEN_SIZE or w % ref.TOKEN_SIZE:
        raise EditInputError(
            f"image is {w}x{h}; the reference model needs multiples of {ref.TOKEN_SIZE} px: "
            f"crop or resize to {w // ref.TOKEN_SIZE * ref.TOKEN_SIZE}x{h // ref.TOKEN_SIZE * ref.TOKEN_SIZE}"
        )
    return image, (mask > 0).astype(np.uint8)

"""The reference inpainting pipeline: Euler flow matching with the reference model.

A thin diffusers pipeline around ``FlowMatchEulerDiscreteScheduler``: known pixels follow
their exact noisy trajectory and are pasted back at the end, so only the hole is generated.
The model's decoder (since v2) then repaints the hole's pixels across token edges, as a VAE
decoder would.
Its transformer may be the stock model or a HiLo one (``hilo_export.apply``); a HiLo
transformer is asked to plan the edit once, before the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler

from ..errors import HiLoError
from ..model.loading import REFERENCE, ModelError, load_reference, reference_weights_dir
from ..planning.plan import TokenPlan
from . import model as ref


class EditInputError(HiLoError, ValueError):
    """An image or mask the pipeline cannot edit; the message says how to fix it."""



@dataclass
class EditResult:
    image: np.ndarray  # uint8 [H, W, 3]: the input outside the mask, exactly
    step_seconds: list[float] = field(default_factory=list)  # transformer time per step
    total_seconds: float = 0.0  # the whole edit, planning included
    plan: TokenPlan | None = None


class ReferenceInpaintPipeline(DiffusionPipeline):
    """Inpainting with the reference model: Euler flow matching, known pixels kept on their trajectory."""

    hilo_fill = "zero"  # dropped tokens are all known pixels, which every step overwrites

    def __init__(self, transformer: torch.nn.Module, scheduler: FlowMatchEulerDiscreteScheduler,
                 decoder: ref.Decoder | None = None):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler, decoder=decoder)

    @classmethod
    def from_reference(cls, model: torch.nn.Module | str = REFERENCE,
                       decoder: ref.Decoder | None = None) -> "ReferenceInpaintPipeline":
        """A shipped model by name (``reference``, ``reference-hilo``) with its decoder; a given
        ``model`` module comes with the given ``decoder`` only."""
        if isinstance(model, str):
            try:
                name, model = model, load_reference(model)
                decoder = ref.load_decoder(reference_weights_dir(name))
            except ModelError as err:
                raise EditInputError(str(err)) from None
        return cls(model, FlowMatchEulerDiscreteScheduler(shift=1.0), decoder)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, mask: np.ndarray, steps: int = 8, seed: int = 0, dense: bool = False,
                 progress: bool = True, noise_window: tuple[tuple[int, int], int, int] | None = None) -> EditResult:
        """``noise_window`` ((full height, full width) in tokens, first row, first col): ``image``
        is that token-aligned window of a larger image, and the noise is the larger image's
        (``seed``'s draw at full size, cropped), so a crop sees exactly the noise the full edit does."""
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
        if noise_window is None:
            noise = torch.randn(known.shape, generator=torch.Generator().manual_seed(seed))
        else:
            (full_h, full_w), r0, c0 = noise_window
            full = torch.randn((1, full_h * full_w, known.shape[2]), generator=torch.Generator().manual_seed(seed))
            noise = full.reshape(1, full_h, full_w, -1)[:, r0:r0 + grid[0], c0:c0 + grid[1]].reshape(known.shape)

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
        edited = torch.where(hole > 0, ref.unpack(x, grid), pixels)
        if self.decoder is not None:
            edited = self.decoder(edited, hole)
        edited = ref.to_uint8(edited)
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

"""Planning a diffusers ``FluxFillPipeline`` from its own inputs, without forking its ``__call__``.

``FillPlanning.install()`` wraps three methods of one pipeline instance (never the class):

- ``prepare_latents(init_image, ...)`` receives the image after the pipeline's own resizing and
  normalization; it starts a call (the previous plan is dropped) and keeps the image.
- ``_encode_vae_image``, called inside it, gives the encoded input image: the known latents
  ``x0`` the dropped tokens are carried to. The pipeline encodes the unmasked image once per
  call anyway (for ``strength``); HiLo reuses that encoding, so it costs no extra VAE pass. Only
  when the caller passes ``latents=`` (the pipeline then skips it) is the image encoded here, once.
- ``prepare_mask_latents(mask, ...)`` receives the binarized mask at the same size: the plan is
  made here, once per call, in token space (the pipeline's ``vae_scale_factor * 2`` = 16 px for
  Flux, read from its image processor), before the first denoising step.

With ``composite`` the image processor's ``postprocess`` also pastes the processed input back
outside the mask before conversion, so PIL and numpy outputs hold the input's pixels bit for bit.
``remove()`` deletes the wrappers, leaving the instance as it was.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import torch

from ..errors import HiLoError

_FILL_MODULE = "diffusers.pipelines.flux.pipeline_flux_fill"


class FillPlanningError(HiLoError, ValueError):
    """A Fill pipeline call HiLo cannot plan; the message says what to pass instead."""


def is_fill_pipeline(pipe: Any) -> bool:
    """True for diffusers' ``FluxFillPipeline`` and its subclasses (without importing diffusers' pipelines)."""
    module = sys.modules.get(_FILL_MODULE)  # a FluxFillPipeline instance means the module is loaded
    return module is not None and isinstance(pipe, module.FluxFillPipeline)


class FillPlanning:
    """Per call of one ``FluxFillPipeline``: plan from its processed image and mask; known latents; composite."""

    def __init__(self, pipe: Any, hilo: Any, composite: bool = False):
        self.pipe, self.hilo, self.composite = pipe, hilo, composite
        self.dense = False
        # pixels per token: the pipeline resizes to multiples of it (VAE factor x Flux's 2 x 2 packing)
        self.token_size = int(pipe.image_processor.config.vae_scale_factor)
        if hilo.token_size != self.token_size:
            raise FillPlanningError(
                f"this pipeline's tokens are {self.token_size} px (VAE factor {pipe.vae_scale_factor} x 2) but the HiLo "
                f"planner uses {hilo.token_size} px: build the engines with --token-size {self.token_size}"
            )
        self._pixels: torch.Tensor | None = None  # [1, 3, H, W] in [-1, 1], the processed input
        self._mask: torch.Tensor | None = None  # [1, 1, H, W], 1 = edit
        self._latents: torch.Tensor | None = None  # the pipeline's encoding of the input, [b, c, h, w]
        self._wrapped: list[tuple[Any, str]] = []

    # ------------------------------------------------------------ install / remove

    def install(self) -> None:
        self._wrap(self.pipe, "prepare_latents", self._prepare_latents)
        self._wrap(self.pipe, "_encode_vae_image", self._encode_vae_image)
        self._wrap(self.pipe, "prepare_mask_latents", self._prepare_mask_latents)
        if self.composite:
            self._wrap(self.pipe.image_processor, "postprocess", self._postprocess)

    def remove(self) -> None:
        for owner, name in reversed(self._wrapped):
            object.__delattr__(owner, name)  # the class's method shows through again
        self._wrapped.clear()
        self.hilo.known = None

    def _wrap(self, owner: Any, name: str, wrapper: Callable[..., Any]) -> None:
        if name in vars(owner):
            raise FillPlanningError(f"{type(owner).__name__}.{name} is already patched on this instance; remove that patch first")
        stock = getattr(owner, name)
        object.__setattr__(owner, name, lambda *args, **kwargs: wrapper(stock, *args, **kwargs))
        self._wrapped.append((owner, name))

    # ------------------------------------------------------------ the wrappers

    def _prepare_latents(self, stock, image, timestep, batch_size, num_channels_latents, height, width, dtype, device,
                         generator, latents=None):
        self.hilo.plan, self.hilo.known = None, None  # a new call: nothing from the last one may leak
        self._latents, self._mask = None, None
        self._pixels = _one_for_the_batch(image, "image", "images")
        result = stock(image, timestep, batch_size, num_channels_latents, height, width, dtype, device, generator, latents)
        if self._latents is None:  # latents= given: the pipeline did not encode the input, so encode it once
            self.pipe._encode_vae_image(image.to(device=device, dtype=dtype), generator)
        encoded = self._latents
        c, h, w = encoded.shape[1:]
        self.hilo.known = self.pipe._pack_latents(encoded, encoded.shape[0], c, h, w)
        return result

    def _encode_vae_image(self, stock, image, generator):
        self._latents = stock(image, generator)
        return self._latents

    def _prepare_mask_latents(self, stock, mask, masked_image, *args, **kwargs):
        self._mask = _one_for_the_batch(mask, "mask", "mask_image")
        if self._pixels is None:
            raise FillPlanningError("HiLo plans from image= and mask_image=; pass both to the pipeline")
        pixels = self._pixels[0]
        height, width = pixels.shape[1:]
        resolution = getattr(getattr(self.hilo, "runtime", None), "resolution", None)
        if resolution is not None and (width, height) != tuple(resolution):
            raise FillPlanningError(
                f"the pipeline works at {width}x{height} but the engines were built for {resolution[0]}x{resolution[1]}: "
                f"call it with width={resolution[0]}, height={resolution[1]}, or build for --resolution {width}x{height}"
            )
        image = ((pixels.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        self.hilo.prepare(image, self._mask[0, 0].numpy() > 0.5, dense=self.dense)
        return stock(mask, masked_image, *args, **kwargs)

    def _postprocess(self, stock, image, output_type="pil", *args, **kwargs):
        if output_type != "latent" and self._mask is not None:
            edit = self._mask.to(image.device) > 0.5
            image = torch.where(edit, image, self._pixels.to(image.device, image.dtype))
        return stock(image, output_type, *args, **kwargs)


def _one_for_the_batch(value: torch.Tensor, what: str, argument: str) -> torch.Tensor:
    """The first row of ``value`` [b, ...], after checking every row holds the same: HiLo plans once per call."""
    value = value.detach().cpu()
    if value.shape[0] > 1 and not bool((value == value[:1]).all()):
        raise FillPlanningError(
            f"the {value.shape[0]} {argument} of this call differ; HiLo plans one edit per call (one plan for the batch): "
            f"pass one {what} for every prompt and image, or call the pipeline once per {what}"
        )
    return value[:1]


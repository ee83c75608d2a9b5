"""What a distillation trains on, per kind of model: the reference model or a ``FluxFillPipeline`` folder.

A source knows its model's inputs: how an image and its hole become the full-grid forward inputs
at a noise level (the clean latent noised on the flow-matching line ``x_t = (1 - s) x_0 + s e``,
with the model's conditioning and its empty prompt), the noise levels its pipeline visits in an
8-step edit, and how to write the distilled model as the folder the source came from.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..model.configs import transformer_folder
from ..model.loading import REFERENCE_MODELS, load_reference, model_folder, reference_weights_dir
from ..model.lowfreq import save as save_lowfreq
from ..model.lowfreq import stock_embedder
from ..model.weights import ShardedWeights
from ..reference import model as ref
from .student import TrainError

FILL_PIPELINE = "FluxFillPipeline"
EDIT_STEPS = 8  # the few-step edits the engines serve: the noise levels trained on


class Source(Protocol):
    kind: str
    name: str
    model: torch.nn.Module
    token_size: int

    def sigmas(self, grid: tuple[int, int]) -> list[float]:
        """The noise levels of an ``EDIT_STEPS``-step edit on a grid of this size."""

    def inputs(self, pixels: torch.Tensor, holes: torch.Tensor, sigma: float, noise: torch.Generator) -> dict[str, Any]:
        """Full-grid forward inputs: pixels float [B, 3, H, W] in [-1, 1], holes float [B, 1, H, W] (1 = edit)."""

    def save(self, model: torch.nn.Module, out: Path) -> Path:
        """Write ``model`` (adapters merged) as a folder of the source's kind; returns the folder ``build`` takes."""


def open_source(name: str, device: str, dtype: torch.dtype, text_len: int | None = None) -> Source:
    """The reference model (built-in name or a folder of it) or a FluxFillPipeline folder."""
    if name in REFERENCE_MODELS:
        return ReferenceSource(name, reference_weights_dir(name), device, dtype)
    folder = model_folder(name)
    index = folder / "model_index.json"
    if index.exists():
        kind = json.loads(index.read_text()).get("_class_name")
        if kind != FILL_PIPELINE:
            raise TrainError(f"{folder} holds a {kind}; distill trains a {FILL_PIPELINE} folder or the reference model")
        return FillSource(str(folder), folder, device, dtype, text_len)
    config = json.loads((transformer_folder(folder) / "config.json").read_text())
    if all(_same(config.get(key), value) for key, value in ref.CONFIG.items()):
        return ReferenceSource(str(folder), transformer_folder(folder), device, dtype)
    raise TrainError(f"{folder} is neither a {FILL_PIPELINE} folder nor a reference model: distill needs the model's "
                     "conditioning and VAE, which a bare transformer folder lacks; pass the pipeline folder")


def _same(a: Any, b: Any) -> bool:
    return list(a) == list(b) if isinstance(b, (tuple, list)) and isinstance(a, (tuple, list)) else a == b


def stored_dtype(folder: Path) -> torch.dtype:
    """The dtype the folder's weights are stored in (the distilled model is saved the same way)."""
    entries = ShardedWeights(folder).entries()
    return next(iter(entries.values()))[0]


def save_transformer(model: torch.nn.Module, folder: Path, dtype: torch.dtype) -> None:
    """``model`` in ``dtype`` (it stays in it) as a diffusers folder, its low-frequency embedding beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    model.to(dtype)
    with stock_embedder(model):  # diffusers' keys only; the learned embedding goes beside them
        model.save_pretrained(folder, safe_serialization=True)
    save_lowfreq(model, folder)


class ReferenceSource:
    """The reference model: pixel-token latents, the push-pull pre-fill and the hole as conditioning."""

    kind = "reference"
    token_size = ref.TOKEN_SIZE

    def __init__(self, name: str, folder: Path, device: str, dtype: torch.dtype):
        self.name, self.folder, self.device = name, folder, device
        self.model = load_reference(folder)  # float32 on the CPU
        if dtype != torch.float32 or device != "cpu":
            self.model.to(device, dtype)

    def sigmas(self, grid: tuple[int, int]) -> list[float]:
        # the reference pipeline's scheduler has shift 1: its sigmas are the linear ones
        return np.linspace(1.0, 1.0 / EDIT_STEPS, EDIT_STEPS).tolist()

    @torch.no_grad()
    def inputs(self, pixels: torch.Tensor, holes: torch.Tensor, sigma: float, noise: torch.Generator) -> dict[str, Any]:
        grid = (pixels.shape[2] // ref.TOKEN_SIZE, pixels.shape[3] // ref.TOKEN_SIZE)
        cond, _ = ref.condition(pixels, holes)
        clean = ref.pack(pixels)
        noisy = (1 - sigma) * clean + sigma * torch.randn(clean.shape, generator=noise)
        dtype = next(self.model.parameters()).dtype
        inputs = ref.model_inputs(noisy, cond, torch.tensor([sigma]), grid)
        return {k: v.to(self.device, dtype if k not in ("img_ids", "txt_ids") else torch.float32) for k, v in inputs.items()}

    def save(self, model: torch.nn.Module, out: Path) -> Path:
        save_transformer(model, out, stored_dtype(self.folder))
        decoder = self.folder / ref.DECODER_FILE
        if decoder.exists():  # the pixel decoder is not distilled: the same one serves the new model
            shutil.copy2(decoder, out / ref.DECODER_FILE)
        return out


class FillSource:
    """A saved ``FluxFillPipeline``: VAE latents packed 2 x 2, the masked image's latents and the packed
    mask as conditioning, the empty prompt, the pipeline's guidance and shifted schedule."""

    kind = "fill"

    def __init__(self, name: str, folder: Path, device: str, dtype: torch.dtype, text_len: int | None,
                 guidance_scale: float = 30.0):
        from diffusers import FluxFillPipeline

        self.name, self.folder, self.device = name, folder, device
        try:
            pipe = FluxFillPipeline.from_pretrained(folder, dtype=dtype)
        except (OSError, ValueError, RuntimeError) as err:
            raise TrainError(f"cannot load the pipeline in {folder}: {str(err).splitlines()[0]}") from None
        pipe.to(device)
        self.pipe = pipe
        self.model = pipe.transformer
        self.token_size = pipe.vae_scale_factor * 2
        self.guidance_scale = guidance_scale
        length = text_len or min(512, pipe.tokenizer_2.model_max_length)
        with torch.no_grad():
            self.text = pipe.encode_prompt(prompt="", prompt_2=None, device=device, max_sequence_length=length)
        # the text encoders are needed no more: free them (a T5-XXL is 9 GB)
        pipe.text_encoder = pipe.text_encoder_2 = None

    def sigmas(self, grid: tuple[int, int]) -> list[float]:
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        scheduler = copy.deepcopy(self.pipe.scheduler)
        config = scheduler.config
        linear = np.linspace(1.0, 1.0 / EDIT_STEPS, EDIT_STEPS)
        if config.get("use_dynamic_shifting", False):
            mu = calculate_shift(grid[0] * grid[1], config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                                 config.get("base_shift", 0.5), config.get("max_shift", 1.15))
            scheduler.set_timesteps(sigmas=linear.tolist(), mu=mu)
        else:
            scheduler.set_timesteps(sigmas=linear.tolist())
        return [float(s) for s in scheduler.sigmas[:EDIT_STEPS]]

    @torch.no_grad()
    def inputs(self, pixels: torch.Tensor, holes: torch.Tensor, sigma: float, noise: torch.Generator) -> dict[str, Any]:
        vae, batch = self.pipe.vae, pixels.shape[0]
        dtype = self.model.dtype
        pixels, holes = pixels.to(self.device, dtype), holes.to(self.device, dtype)
        shift, scale = vae.config.shift_factor or 0.0, vae.config.scaling_factor
        latents = vae.encode(pixels).latent_dist.mode()  # the posterior mean: a deterministic target
        clean = pack((latents - shift) * scale)
        # the pipeline's conditioning; given latents, prepare_mask_latents only scales and packs them
        masked = vae.encode(pixels * (1 - holes)).latent_dist.mode()
        mask, masked_latents = self.pipe.prepare_mask_latents(
            holes, masked, batch, latents.shape[1], 1, pixels.shape[2], pixels.shape[3], dtype, self.device, None)
        grid = (latents.shape[2] // 2, latents.shape[3] // 2)
        noisy = (1 - sigma) * clean + sigma * torch.randn(clean.shape, generator=noise).to(self.device, dtype)
        embeds, pooled, text_ids = self.text
        inputs = {
            "hidden_states": torch.cat([noisy, masked_latents, mask], dim=-1),
            "encoder_hidden_states": embeds.expand(batch, -1, -1),
            "pooled_projections": pooled.expand(batch, -1),
            "timestep": torch.full((batch,), sigma, device=self.device, dtype=dtype),
            "img_ids": ref.grid_ids(grid).to(self.device),
            "txt_ids": text_ids,
        }
        if self.model.config.guidance_embeds:
            inputs["guidance"] = torch.full((batch,), self.guidance_scale, device=self.device, dtype=torch.float32)
        return inputs

    def save(self, model: torch.nn.Module, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        for item in self.folder.iterdir():  # every other component as it was
            if item.name == "transformer":
                continue
            target = out / item.name
            if item.is_dir():
                shutil.copytree(item, target, dirs_exist_ok=True)
            else:
                shutil.copy2(item, target)
        save_transformer(model, out / "transformer", stored_dtype(transformer_folder(self.folder)))
        return out


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/2)(W/2), 4C]: Flux's 2 x 2 packing, row-major."""
    b, c, h, w = latents.shape
    packed = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return packed.reshape(b, (h // 2) * (w // 2), c * 4)

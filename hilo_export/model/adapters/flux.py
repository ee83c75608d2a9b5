"""Flux (diffusers ``FluxTransformer2DModel``): plain, Fill-style and guidance-distilled.

The stock model runs unchanged on the shorter sequence: image tokens and their ``img_ids``
go through the same gather and low-frequency pooling, so each sequence token carries its
true position into RoPE (low-frequency tokens sit at fractional block centres). A distilled
model's learned low-frequency embedding (``model/lowfreq.py``) embeds the low-frequency tokens.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

from ..loading import ModelError
from ..lowfreq import lowfreq_tokens
from ..sequence import PlanTensors, compress
from .base import DeclaredInputs, Input


class FluxAdapter(DeclaredInputs):
    family = "flux"
    model_classes = ("FluxTransformer2DModel",)
    inputs = (
        Input("hidden_states", ("batch", "tokens", "in_channels")),
        Input("encoder_hidden_states", ("batch", "text", "joint_attention_dim")),
        Input("pooled_projections", ("batch", "pooled_projection_dim")),
        Input("timestep", ("batch",), example="uniform"),
        Input("img_ids", ("tokens", 3), example="grid_ids", model_dtype=False),
        Input("txt_ids", ("text", 3), example="zeros", model_dtype=False),
        Input("guidance", ("batch",), when="guidance_embeds", example=3.5),
    )
    unsupported_inputs = ("controlnet_block_samples", "controlnet_single_block_samples")

    def out_channels(self, model: torch.nn.Module) -> int:
        return model.out_channels

    def attention_heads(self, model: torch.nn.Module) -> int:
        return model.config.num_attention_heads

    def predict(self, model: torch.nn.Module, plan: PlanTensors, n_tokens: int, inputs: dict[str, Any]) -> torch.Tensor:
        """Predictions for the HiLo sequence, [B, L + K, out_channels]."""
        img_ids = inputs["img_ids"]
        if img_ids is None:
            raise ModelError("Flux needs img_ids (the [N, 3] image token positions) to place the kept tokens")
        if img_ids.ndim == 3:  # diffusers' deprecated batched form; positions are shared
            img_ids = img_ids[0]
        if img_ids.shape[0] != n_tokens:
            raise ModelError(f"img_ids has {img_ids.shape[0]} rows but the plan's grid has {n_tokens} tokens")
        sequence = compress(inputs["hidden_states"], plan)
        positions = compress(img_ids[None].float(), plan.first())[0]
        with lowfreq_tokens(model, plan.n_lowfreq):  # a distilled model's own low-frequency embedding
            return model(
                hidden_states=sequence,
                encoder_hidden_states=inputs["encoder_hidden_states"],
                pooled_projections=inputs["pooled_projections"],
                timestep=inputs["timestep"],
                img_ids=positions,
                txt_ids=inputs["txt_ids"],
                guidance=inputs.get("guidance"),
                joint_attention_kwargs=inputs.get("joint_attention_kwargs"),
                return_dict=False,
            )[0]

    @contextmanager
    def export_mode(self, model: torch.nn.Module) -> Iterator[None]:
        """Rotary frequencies in float32: diffusers computes them in float64, which engines should not see."""
        stock = model.pos_embed
        model.pos_embed = _Float32RotaryEmbedding(stock.theta, stock.axes_dim)
        try:
            yield
        finally:
            model.pos_embed = stock


class _Float32RotaryEmbedding(torch.nn.Module):
    """FluxPosEmbed with float32 frequencies (same formula, through diffusers' own helper)."""

    def __init__(self, theta: int, axes_dim: list[int]):
        super().__init__()
        self.theta = theta
        self.axes_dim = axes_dim

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from diffusers.models.embeddings import get_1d_rotary_pos_embed

        positions = ids.float()
        cos, sin = [], []
        for axis, dim in enumerate(self.axes_dim):
            c, s = get_1d_rotary_pos_embed(
                dim, positions[:, axis], theta=self.theta, repeat_interleave_real=True, use_real=True,
                freqs_dtype=torch.float32,
            )
            cos.append(c)
            sin.append(s)
        return torch.cat(cos, dim=-1), torch.cat(sin, dim=-1)

"""Flux (diffusers ``FluxTransformer2DModel``): plain, Fill-style and guidance-distilled.

The stock model runs unchanged on the shorter sequence: image tokens and their ``img_ids``
go through the same gather and low-frequency pooling, so each sequence token carries its
true position into RoPE (low-frequency tokens sit at fractional block centres).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

from ..sequence import PlanTensors, compress


class FluxAdapter:
    family = "flux"
    model_classes = ("FluxTransformer2DModel",)
    # forward inputs with a batch axis: a batch with several plans is split along them
    batched_inputs = ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "guidance")
    unsupported_inputs = ("controlnet_block_samples", "controlnet_single_block_samples")

    def out_channels(self, model: torch.nn.Module) -> int:
        return model.out_channels

    def attention_heads(self, model: torch.nn.Module) -> int:
        return model.config.num_attention_heads

    def predict(self, model: torch.nn.Module, plan: PlanTensors, n_tokens: int, inputs: dict[str, Any]) -> torch.Tensor:
        """Predictions for the HiLo sequence, [B, L + K, out_channels]."""
        img_ids = inputs["img_ids"]
        if img_ids is None:
            raise ValueError("Flux needs img_ids (the [N, 3] image token positions) to place the kept tokens")
        if img_ids.ndim == 3:  # diffusers' deprecated batched form; positions are shared
            img_ids = img_ids[0]
        if img_ids.shape[0] != n_tokens:
            raise ValueError(f"img_ids has {img_ids.shape[0]} rows but the plan's grid has {n_tokens} tokens")
        sequence = compress(inputs["hidden_states"], plan)
        positions = compress(img_ids[None].float(), plan.first())[0]
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

    # ------------------------------------------------------------ export

    def input_names(self, model: torch.nn.Module) -> list[str]:
        """The full-grid engine inputs, in engine order (example_inputs gives them in this order)."""
        names = ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids"]
        return [*names, "guidance"] if model.config.guidance_embeds else names

    def example_inputs(self, model: torch.nn.Module, batch: int, grid: tuple[int, int], text_len: int,
                       dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Full-grid engine inputs in engine order (the plan tensors are added by the exporter)."""
        cfg = model.config
        h, w = grid
        g = torch.Generator().manual_seed(0)
        img_ids = torch.zeros(h * w, 3)
        img_ids[:, 1] = torch.arange(h).repeat_interleave(w)
        img_ids[:, 2] = torch.arange(w).repeat(h)
        inputs = {
            "hidden_states": torch.randn(batch, h * w, cfg.in_channels, generator=g, dtype=dtype),
            "encoder_hidden_states": torch.randn(batch, text_len, cfg.joint_attention_dim, generator=g, dtype=dtype),
            "pooled_projections": torch.randn(batch, cfg.pooled_projection_dim, generator=g, dtype=dtype),
            "timestep": torch.rand(batch, generator=g, dtype=dtype),
            "img_ids": img_ids,
            "txt_ids": torch.zeros(text_len, 3),
        }
        if cfg.guidance_embeds:
            inputs["guidance"] = torch.full((batch,), 3.5, dtype=dtype)
        return inputs

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

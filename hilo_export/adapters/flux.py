"""Flux (diffusers ``FluxTransformer2DModel``): plain, Fill-style and guidance-distilled.

The stock model runs unchanged on the shorter sequence: image tokens and their ``img_ids``
go through the same gather and low-frequency pooling, so each sequence token carries its
true position into RoPE (low-frequency tokens sit at fractional block centres).
"""

from __future__ import annotations

from typing import Any

import torch

from ..sequence import PlanTensors, compress, expand


class FluxAdapter:
    family = "flux"
    model_classes = ("FluxTransformer2DModel",)
    # forward inputs with a batch axis: a batch with several plans is split along them
    batched_inputs = ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "guidance")
    unsupported_inputs = ("controlnet_block_samples", "controlnet_single_block_samples")

    def out_channels(self, model: torch.nn.Module) -> int:
        return model.out_channels

    def forward(
        self,
        model: torch.nn.Module,
        plan: PlanTensors,
        n_tokens: int,
        fill: torch.Tensor | None,
        inputs: dict[str, Any],
    ) -> torch.Tensor:
        img_ids = inputs["img_ids"]
        if img_ids is None:
            raise ValueError("Flux needs img_ids (the [N, 3] image token positions) to place the kept tokens")
        if img_ids.ndim == 3:  # diffusers' deprecated batched form; positions are shared
            img_ids = img_ids[0]
        if img_ids.shape[0] != n_tokens:
            raise ValueError(f"img_ids has {img_ids.shape[0]} rows but the plan's grid has {n_tokens} tokens")
        sequence = compress(inputs["hidden_states"], plan)
        positions = compress(img_ids[None].float(), plan.first())[0]
        output = model(
            hidden_states=sequence,
            encoder_hidden_states=inputs["encoder_hidden_states"],
            pooled_projections=inputs["pooled_projections"],
            timestep=inputs["timestep"],
            img_ids=positions,
            txt_ids=inputs["txt_ids"],
            guidance=inputs["guidance"],
            joint_attention_kwargs=inputs["joint_attention_kwargs"],
            return_dict=False,
        )[0]
        return expand(output, plan, n_tokens, fill)

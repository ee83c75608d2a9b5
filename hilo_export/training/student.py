"""The student and its teacher: one model, two ways of running it.

The student is the model with LoRA adapters (peft) on its transformer blocks' linear layers and
a learned low-frequency patch embedding (``model/lowfreq.py``); both start at zero, so at step 0 the
student's HiLo prediction is today's, bit for bit. The teacher is the same weights with the
adapters switched off, run dense (every token, no low-frequency tokens): no second copy of a
12B model is held.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

from ..errors import HiLoError, require
from ..model.adapters import adapter_for
from ..model.lowfreq import add_lowfreq
from ..model.sequence import PlanTensors

INSTALL_HINT = "distillation needs peft: pip install 'hilo-export[train]'"
# The linear layers of Flux's double and single blocks, as diffusers' own Flux LoRA scripts pick
# them (attention projections and feed-forwards); the embedders and the final projection stay.
LORA_TARGETS = (
    r".*transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
    r"|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2)|proj_mlp|proj_out)"
)


class TrainError(HiLoError, ValueError):
    """Distillation settings or inputs that cannot work; the message says what to change."""


def peft_module():
    return require("peft", TrainError, INSTALL_HINT)


class Student:
    """``model`` turned into a student in place: LoRA of ``rank`` and a learned low-frequency embedding."""

    def __init__(self, model: torch.nn.Module, rank: int, alpha: float | None = None):
        peft = peft_module()
        if rank < 1:
            raise TrainError(f"--lora-rank must be at least 1, got {rank}")
        self.adapter = adapter_for(model)
        self.model = model
        model.requires_grad_(False)
        self.lowfreq = add_lowfreq(model)
        config = peft.LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=LORA_TARGETS, lora_dropout=0.0,
                                 init_lora_weights=True)  # B = 0: the adapters add nothing at step 0
        peft.inject_adapter_in_model(config, model)
        self.layers = [m for m in model.modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
        if not self.layers:
            raise TrainError(f"no linear layer of {type(model).__name__} matched the LoRA targets; "
                             "distill trains Flux-style transformers")
        self.lowfreq.lowfreq_delta.requires_grad_(True)
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        """The trained tensors by name (the adapters and the low-frequency difference): what a checkpoint holds."""
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    def hilo(self, plan: PlanTensors, n_tokens: int, inputs: dict[str, Any]) -> torch.Tensor:
        """The student on a HiLo sequence: [B, L + K, C_out]."""
        return self.adapter.predict(self.model, plan, n_tokens, inputs)

    def dense(self, inputs: dict[str, Any]) -> torch.Tensor:
        """The student on every token (the ``full`` bucket runs these weights): [B, N, C_out]."""
        return self.model(**inputs, return_dict=False)[0]

    @torch.no_grad()
    def teacher(self, inputs: dict[str, Any]) -> torch.Tensor:
        """The frozen model, dense: the adapters off, no low-frequency tokens; [B, N, C_out]."""
        with self.adapters_off():
            return self.model(**inputs, return_dict=False)[0]

    @contextmanager
    def adapters_off(self) -> Iterator[None]:
        for layer in self.layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in self.layers:
                layer.enable_adapters(True)
                # enable_adapters(True) also marks the base weights trainable; they stay frozen
                layer.get_base_layer().requires_grad_(False)

    def merge(self) -> torch.nn.Module:
        """The adapters merged into the model's own weights and removed: a plain diffusers model again
        (plus its low-frequency embedding). The student is unusable afterwards."""
        lora = {id(layer) for layer in self.layers}
        for name, module in list(self.model.named_modules()):
            if id(module) in lora:
                module.merge()
                parent_name, _, child = name.rpartition(".")
                parent = self.model.get_submodule(parent_name) if parent_name else self.model
                setattr(parent, child, module.get_base_layer())
        self.layers = []
        self.model.requires_grad_(False)
        return self.model


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each block's activations in the backward pass (diffusers' switch): memory for time."""
    if not getattr(model, "_supports_gradient_checkpointing", False):
        raise TrainError(f"{type(model).__name__} does not support gradient checkpointing; drop --gradient-checkpointing")
    model.enable_gradient_checkpointing()

"""``HiLoTransformer``: a stock diffusers DiT that runs on the tokens a plan keeps."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from ..planning.plan import TokenPlan
from .adapters import adapter_for
from .configs import ModelError
from .sequence import PlanTensors, expand


class HiLoTransformer(torch.nn.Module):
    """Wraps a diffusers transformer; called like it, with full-grid inputs, plus ``plan=``.

    ``plan`` is one ``TokenPlan`` shared by the whole batch (several seeds of one edit,
    classifier-free guidance: one model call) or a sequence of one plan per sample (same
    bucket; samples with equal selections share a call). ``fill`` is a full-grid tensor for
    the tokens that get no prediction; without it they get their block's low-frequency
    prediction. Returns what the stock model returns, on the full grid.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.adapter = adapter_for(model)
        self.model = model
        self._signature = inspect.signature(model.forward)

    @property
    def config(self):
        return self.model.config

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device

    def forward(self, *args: Any, plan: TokenPlan | Sequence[TokenPlan], fill: torch.Tensor | None = None, **kwargs: Any):
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        inputs = dict(bound.arguments)
        for name in self.adapter.unsupported_inputs:
            if inputs.get(name) is not None:
                raise ModelError(f"{name} is not supported by HiLoTransformer yet; run the stock model for this call")
        return_dict = inputs.pop("return_dict", True)
        hidden_states = inputs["hidden_states"]
        batch = hidden_states.shape[0]
        plans = _per_sample(plan, batch)
        n_tokens = plans[0].n_tokens
        if hidden_states.ndim != 3:
            raise ModelError(f"hidden_states must be [batch, tokens, channels]; got shape {tuple(hidden_states.shape)}")
        if hidden_states.shape[1] != n_tokens:
            raise ModelError(
                f"hidden_states has shape {tuple(hidden_states.shape)}, but the plan is for a {plans[0].grid[0]}x"
                f"{plans[0].grid[1]} grid ({n_tokens} tokens): plan with an image of the latents' size"
            )
        if fill is not None:
            expected = (batch, n_tokens, self.adapter.out_channels(self.model))
            if tuple(fill.shape) != expected:
                raise ModelError(f"fill has shape {tuple(fill.shape)}; expected the full-grid output shape {expected}")

        outputs = []
        for rows, group_plan in _groups(plans):
            group_inputs = {
                name: _take(value, rows, batch) if name in self.adapter.batched_inputs else value
                for name, value in inputs.items()
            }
            tensors = PlanTensors.from_plan(group_plan, len(rows), hidden_states.device)
            group_fill = None if fill is None else fill[rows]
            predictions = self.adapter.predict(self.model, tensors, n_tokens, group_inputs)
            outputs.append((rows, expand(predictions, tensors, n_tokens, group_fill)))
        output = _reassemble(outputs, batch)

        if not return_dict:
            return (output,)
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=output)


def _per_sample(plan: TokenPlan | Sequence[TokenPlan], batch: int) -> list[TokenPlan]:
    if isinstance(plan, TokenPlan):
        return [plan] * batch
    plans = list(plan)
    if len(plans) != batch:
        raise ModelError(f"got {len(plans)} plans for a batch of {batch}; pass one plan, or one per sample")
    if len({(p.grid, p.bucket) for p in plans}) != 1:
        raise ModelError("plans of one batch must share grid and bucket; plan them together with plan_batch")
    return plans


def _groups(plans: list[TokenPlan]) -> list[tuple[list[int], TokenPlan]]:
    groups: list[tuple[list[int], TokenPlan]] = []
    for row, plan in enumerate(plans):
        for rows, group_plan in groups:
            if group_plan is plan or group_plan.same_selection(plan):
                rows.append(row)
                break
        else:
            groups.append(([row], plan))
    return groups


def _take(value: Any, rows: list[int], batch: int) -> Any:
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch and len(rows) < batch:
        return value[rows]
    return value


def _reassemble(outputs: list[tuple[list[int], torch.Tensor]], batch: int) -> torch.Tensor:
    if len(outputs) == 1:
        return outputs[0][1]
    first = outputs[0][1]
    result = first.new_empty(batch, *first.shape[1:])
    for rows, output in outputs:
        result[rows] = output
    return result

"""The ``hilo`` token ops as torch custom ops.

``hilo::token_gather(data[B, N, C], indices[B, K]) -> [B, K, C]`` picks tokens;
``hilo::token_scatter(base[B, N, C], indices[B, K], updates[B, K, C]) -> [B, N, C]`` writes
them back into a copy of ``base``. They are opaque to tracing (fake kernels give shapes), so
an exporter can map each to one ONNX ``hilo`` node; they have autograd formulas so a model
can be fine-tuned through them.
"""

from __future__ import annotations

import torch


def _expand_index(indices: torch.Tensor, channels: int) -> torch.Tensor:
    return indices.unsqueeze(-1).expand(-1, -1, channels)


@torch.library.custom_op("hilo::token_gather", mutates_args=())
def token_gather(data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return torch.gather(data, 1, _expand_index(indices, data.shape[-1]))


@token_gather.register_fake
def _token_gather_fake(data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    torch._check(data.dim() == 3 and indices.dim() == 2, lambda: "token_gather takes data[B, N, C] and indices[B, K]")
    return data.new_empty(indices.shape[0], indices.shape[1], data.shape[2])


def _token_gather_backward(ctx, grad: torch.Tensor):
    data_shape, indices = ctx.data_shape, ctx.saved_tensors[0]
    grad_data = grad.new_zeros(data_shape).scatter_add(1, _expand_index(indices, data_shape[-1]), grad)
    return grad_data, None


def _token_gather_setup(ctx, inputs, output) -> None:
    data, indices = inputs
    ctx.data_shape = data.shape
    ctx.save_for_backward(indices)


token_gather.register_autograd(_token_gather_backward, setup_context=_token_gather_setup)


@torch.library.custom_op("hilo::token_scatter", mutates_args=())
def token_scatter(base: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
    return base.scatter(1, _expand_index(indices, base.shape[-1]), updates)


@token_scatter.register_fake
def _token_scatter_fake(base: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
    torch._check(
        base.dim() == 3 and indices.dim() == 2 and updates.dim() == 3,
        lambda: "token_scatter takes base[B, N, C], indices[B, K] and updates[B, K, C]",
    )
    return torch.empty_like(base)


def _token_scatter_backward(ctx, grad: torch.Tensor):
    (indices,) = ctx.saved_tensors
    index = _expand_index(indices, grad.shape[-1])
    return grad.scatter(1, index, 0.0), None, torch.gather(grad, 1, index)


def _token_scatter_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[1])


token_scatter.register_autograd(_token_scatter_backward, setup_context=_token_scatter_setup)

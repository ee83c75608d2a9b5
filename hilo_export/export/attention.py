"""Attention exported in query chunks, so a long sequence never holds its whole score matrix.

The exporter's stock translation of ``scaled_dot_product_attention`` is ``Softmax(Q Kᵀ) V``
over the whole sequence: a ``[batch, heads, S, S]`` score tensor, plus its softmax, alive at
once. For flux-shaped at 1024x1024 (24 heads, S = 4608) that is 2 GiB each in float32, more
than the model's weights, and it set the serving peak. Here queries are
split into ``chunks`` slices along the sequence; each slice's scores are computed, used and
freed before the next, so the peak is ``1 / chunks`` of it. Same operators (TensorRT and
ONNX Runtime run them as before), same result up to float rounding.

``chunks`` is chosen per graph from its longest sequence so that one slice's scores stay
under ``SCORES_BUDGET_BYTES``; a graph that fits in one slice keeps the stock translation.
"""

from __future__ import annotations

import math

import torch

from .errors import ExportError

# One query slice's float32 scores at most: a few percent of a large model's weights.
SCORES_BUDGET_BYTES = 256 * 2**20


def attention_chunks(batch: int, heads: int, max_len: int, budget: int = SCORES_BUDGET_BYTES) -> int:
    """Query slices needed so that one slice's float32 scores ``[batch, heads, S/chunks, S]`` fit ``budget``."""
    return max(1, math.ceil(batch * heads * max_len * max_len * 4 / budget))


def chunked_attention_translation(chunks: int) -> dict:
    """A ``custom_translation_table`` entry for ``aten.scaled_dot_product_attention`` in ``chunks`` query
    slices; empty for one slice (the exporter's own translation is then used)."""
    if chunks <= 1:
        return {}
    from onnxscript import opset18 as op

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if attn_mask is not None or is_causal or dropout_p or enable_gqa:
            raise ExportError("chunked attention covers plain attention only (no mask, causality, dropout or GQA)")
        if scale is None:  # 1 / sqrt(head dim), in the query's dtype
            depth = op.Cast(op.Shape(query, start=-1), to=1)  # float32
            factor = op.CastLike(op.Reciprocal(op.Sqrt(depth)), query)
        else:
            factor = op.CastLike(op.Constant(value_float=float(scale)), query)
        keys = op.Transpose(key, perm=[0, 1, 3, 2])
        length = op.Shape(query, start=2, end=3)
        size = op.Div(op.Add(length, op.Constant(value_ints=[chunks - 1])), op.Constant(value_ints=[chunks]))
        axis = op.Constant(value_ints=[2])
        outputs = []
        for i in range(chunks):
            # Slice clamps an end beyond the sequence: the last slice may be shorter
            start = op.Mul(size, op.Constant(value_ints=[i]))
            end = op.Mul(size, op.Constant(value_ints=[i + 1]))
            part = op.Slice(query, start, end, axis)
            weights = op.Softmax(op.MatMul(op.Mul(part, factor), keys), axis=-1)
            outputs.append(op.MatMul(weights, value))
        return op.Concat(*outputs, axis=2)

    return {torch.ops.aten.scaled_dot_product_attention.default: sdpa}

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


# ---------------------------------------------------------------- ONNX
# The exporter maps each custom op to one node of domain ``hilo`` carrying the attributes a
# TensorRT plugin is looked up by; the model also carries a model-local function of the same
# name whose body uses standard ops, so any ONNX runtime runs the file without a plugin.

ONNX_DOMAIN = "hilo"
ONNX_VERSION = 1
PLUGIN_ATTRIBUTES = {"plugin_namespace": "hilo", "plugin_version": "1"}
ONNX_OP_NAMES = {"token_gather": "TokenGather", "token_scatter": "TokenScatter"}
_schemas_registered = False


def register_onnx_schemas() -> None:
    """Make ``hilo.TokenGather`` / ``hilo.TokenScatter`` known to onnx (shape inference, checker)."""
    global _schemas_registered
    if _schemas_registered:
        return
    from onnx import defs

    def schema(name: str, inputs: list[tuple[str, str]]) -> defs.OpSchema:
        return defs.OpSchema(
            name,
            ONNX_DOMAIN,
            ONNX_VERSION,
            doc=f"hilo {name}: see hilo_export/ops.py",
            inputs=[defs.OpSchema.FormalParameter(n, t) for n, t in inputs],
            outputs=[defs.OpSchema.FormalParameter("output", "T")],
            type_constraints=[
                ("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "token data"),
                ("I", ["tensor(int64)"], "token indices"),
            ],
            attributes=[defs.OpSchema.Attribute(a, defs.OpSchema.AttrType.STRING, a) for a in PLUGIN_ATTRIBUTES],
        )

    defs.register_schema(schema("TokenGather", [("data", "T"), ("indices", "I")]))
    defs.register_schema(schema("TokenScatter", [("base", "T"), ("indices", "I"), ("updates", "T")]))
    _schemas_registered = True


def onnx_translations() -> dict:
    """custom_translation_table entries for ``torch.onnx.export(..., dynamo=True)``."""
    import onnxscript

    register_onnx_schemas()
    hilo = onnxscript.values.Opset(ONNX_DOMAIN, ONNX_VERSION)

    def gather(data, indices):
        return hilo.TokenGather(data, indices, **PLUGIN_ATTRIBUTES)

    def scatter(base, indices, updates):
        return hilo.TokenScatter(base, indices, updates, **PLUGIN_ATTRIBUTES)

    return {torch.ops.hilo.token_gather.default: gather, torch.ops.hilo.token_scatter.default: scatter}


def onnx_functions(opset: int) -> list:
    """Model-local FunctionProtos with standard-op bodies for the ``hilo`` ops."""
    from onnx import helper

    axes = helper.make_node("Constant", [], ["axes"], value_ints=[-1])
    unsqueeze = helper.make_node("Unsqueeze", ["indices", "axes"], ["index"])
    imports = [helper.make_opsetid("", opset)]
    gather = helper.make_function(
        ONNX_DOMAIN,
        "TokenGather",
        ["data", "indices"],
        ["output"],
        # GatherND with one batch dimension: output[b, k, :] = data[b, indices[b, k], :]
        [axes, unsqueeze, helper.make_node("GatherND", ["data", "index"], ["output"], batch_dims=1)],
        imports,
        attributes=list(PLUGIN_ATTRIBUTES),
    )
    scatter = helper.make_function(
        ONNX_DOMAIN,
        "TokenScatter",
        ["base", "indices", "updates"],
        ["output"],
        [
            axes,
            unsqueeze,
            helper.make_node("Shape", ["updates"], ["updates_shape"]),
            helper.make_node("Expand", ["index", "updates_shape"], ["index_full"]),
            # output = base; output[b, indices[b, k], c] = updates[b, k, c]
            helper.make_node("ScatterElements", ["base", "index_full", "updates"], ["output"], axis=1),
        ],
        imports,
        attributes=list(PLUGIN_ATTRIBUTES),
    )
    return [gather, scatter]

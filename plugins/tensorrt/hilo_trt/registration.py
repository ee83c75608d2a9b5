"""Registers hilo::TokenGather and hilo::TokenScatter with TensorRT as AOT plugins.

Importing this module needs TensorRT's Python plugin API with AOT support and Triton; call
hilo_trt.register() instead, which says what is missing. The ONNX parser (TensorRT 10.7+)
then builds every hilo node of an exported graph as one of these plugins instead of
inlining its function body. The AOT implementation compiles the Triton kernel to PTX at
build time and TensorRT embeds it in the engine, so the engine runs without Python (C++,
trtexec, Triton Inference Server). There is deliberately no JIT (@trtp.impl)
implementation: an engine built with it would call back into Python at run time.

No ``from __future__ import annotations`` here: TensorRT reads these functions' annotations
as objects to tell tensors from attributes and to check the AOT return type.
"""

import os

import tensorrt as trt
import tensorrt.plugin as trtp
import triton

from . import kernels, layout

_TYPE_NAMES = {trt.float32: "FP32", trt.float16: "FP16", trt.bfloat16: "BF16", trt.int64: "INT64", trt.int32: "INT32"}


def _type_name(dtype) -> str:
    return _TYPE_NAMES.get(dtype, str(dtype))


# ------------------------------------------------------------------ TokenGather


@trtp.register(layout.GATHER_ID)
def _gather_desc(data: trtp.TensorDesc, indices: trtp.TensorDesc) -> trtp.TensorDesc:
    layout.check_types(layout.GATHER, [_type_name(data.dtype), _type_name(indices.dtype)])
    shape = layout.gather_output_shape(data.shape_expr, indices.shape_expr)
    return trtp.from_shape_expr(shape, dtype=data.dtype)


@trtp.autotune(layout.GATHER_ID)
def _gather_autotune(data: trtp.TensorDesc, indices: trtp.TensorDesc,
                     outputs: tuple[trtp.TensorDesc]) -> list[trtp.AutoTuneCombination]:
    return [trtp.AutoTuneCombination(layout.autotune_types(layout.GATHER))]


@trtp.aot_impl(layout.GATHER_ID)
def _gather_aot(data: trtp.TensorDesc, indices: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc],
                tactic: int) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymExprs]:
    launch = layout.gather_launch(data.shape_expr, indices.shape_expr)
    return _compiled(layout.GATHER, kernels.token_gather_kernel, _type_name(data.dtype), launch, n_pointers=3)


# ------------------------------------------------------------------ TokenScatter


@trtp.register(layout.SCATTER_ID)
def _scatter_desc(base: trtp.TensorDesc, indices: trtp.TensorDesc, updates: trtp.TensorDesc) -> trtp.TensorDesc:
    layout.check_types(layout.SCATTER, [_type_name(base.dtype), _type_name(indices.dtype), _type_name(updates.dtype)])
    layout.scatter_output_shape(base.shape_expr, indices.shape_expr, updates.shape_expr)
    return base.like()


@trtp.autotune(layout.SCATTER_ID)
def _scatter_autotune(base: trtp.TensorDesc, indices: trtp.TensorDesc, updates: trtp.TensorDesc,
                      outputs: tuple[trtp.TensorDesc]) -> list[trtp.AutoTuneCombination]:
    return [trtp.AutoTuneCombination(layout.autotune_types(layout.SCATTER))]


@trtp.aot_impl(layout.SCATTER_ID)
def _scatter_aot(base: trtp.TensorDesc, indices: trtp.TensorDesc, updates: trtp.TensorDesc,
                 outputs: tuple[trtp.TensorDesc],
                 tactic: int) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymExprs]:
    launch = layout.scatter_launch(base.shape_expr, indices.shape_expr)
    return _compiled(layout.SCATTER, kernels.token_scatter_kernel, _type_name(base.dtype), launch, n_pointers=4)


# ------------------------------------------------------------------ shared


def _options() -> dict:
    options = {"num_warps": layout.NUM_WARPS}
    # Triton writes PTX of its own CUDA version; an older driver cannot JIT it. This pins an
    # older PTX ISA (e.g. 85 for CUDA 12.5 drivers) without changing Triton.
    if os.environ.get("HILO_TRT_PTX_VERSION"):
        options["ptx_version"] = int(os.environ["HILO_TRT_PTX_VERSION"])
    return options


def _compiled(op: str, fn, data_type: str, launch: dict, n_pointers: int):
    """(kernel name, PTX, launch parameters, int32 scalar arguments) for TensorRT."""
    signature = layout.triton_signature(op, data_type)
    try:
        source = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=launch["constexprs"])
    except TypeError as err:
        raise RuntimeError(f"the hilo plugins need Triton 3.2 or newer (this is {triton.__version__}): {err}") from None
    compiled = triton.compile(source, options=_options())
    name = compiled.metadata.name
    scalars = launch["scalars"]
    ptx = layout.fit_ptx_params(compiled.asm["ptx"], name, n_pointers + len(scalars))

    params = trtp.KernelLaunchParams()
    params.grid_x, params.grid_y, params.grid_z = launch["grid"]
    params.block_x = compiled.metadata.num_warps * 32
    params.shared_mem = compiled.metadata.shared
    extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(s) for s in scalars])
    return name, ptx, params, extra

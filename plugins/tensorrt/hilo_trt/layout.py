"""The pure half of the hilo TensorRT plugins: shapes, types, launch grids, kernel arguments.

Nothing here imports TensorRT or Triton, so it is tested on any machine. Every function
that computes a size works on plain ints (tests, direct launches) and on TensorRT's
symbolic shape expressions alike: it only uses ``*``, ``+`` and ``//``.

Kernel calling convention (TensorRT's AOT plugins launch a kernel with its input pointers,
then the extra int32 scalars the AOT implementation returns, then the output pointers):

    token_gather_kernel(data, indices, N, K, C, out, BLOCK_C)
    token_scatter_kernel(base, indices, updates, N, K, C, out, BLOCK_N, BLOCK_K, BLOCK_C)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

NAMESPACE = "hilo"  # the ONNX nodes' plugin_namespace
GATHER = "TokenGather"
SCATTER = "TokenScatter"
GATHER_ID = f"{NAMESPACE}::{GATHER}"
SCATTER_ID = f"{NAMESPACE}::{SCATTER}"

# Data types the ops accept (hilo_export/ops.py schema: float, float16, bfloat16); indices are int64.
DATA_TYPES = ("FP32", "FP16", "BF16")
TRITON_POINTER = {"FP32": "*fp32", "FP16": "*fp16", "BF16": "*bf16"}
INDEX_TYPE = "INT64"

# Block sizes. Gather copies one token row per program, BLOCK_C channels at a time. Scatter
# computes each output row's source (the last k with indices[b, k] == n, else base) by
# comparing BLOCK_N rows against BLOCK_K indices at a time: one kernel, no ordering hazard
# between copying base and writing updates, deterministic for repeated indices.
GATHER_BLOCK_C = 256
SCATTER_BLOCK_N = 16
SCATTER_BLOCK_K = 128
SCATTER_BLOCK_C = 64
NUM_WARPS = 4

GATHER_PARAMS = ("data", "indices", "N", "K", "C", "out", "BLOCK_C")
SCATTER_PARAMS = ("base", "indices", "updates", "N", "K", "C", "out", "BLOCK_N", "BLOCK_K", "BLOCK_C")


class PluginShapeError(ValueError):
    """Inputs a hilo plugin cannot take; the message says what it expected."""


def cdiv(a: Any, b: int) -> Any:
    """Ceiling division for ints and symbolic sizes alike."""
    return (a + (b - 1)) // b


# ------------------------------------------------------------------ shapes and types


def check_ranks(op: str, ranks: Sequence[int]) -> None:
    expected = {GATHER: (3, 2), SCATTER: (3, 2, 3)}[op]
    if tuple(ranks) != expected:
        names = {GATHER: "data[B, N, C], indices[B, K]", SCATTER: "base[B, N, C], indices[B, K], updates[B, K, C]"}[op]
        raise PluginShapeError(f"hilo::{op} takes {names}; got inputs of rank {tuple(ranks)}")


def check_types(op: str, types: Sequence[str]) -> None:
    """``types`` are TensorRT data type names (FP32, FP16, BF16, INT64, ...), inputs in order."""
    data = [t for i, t in enumerate(types) if i != 1]
    if types[1] != INDEX_TYPE:
        raise PluginShapeError(f"hilo::{op} needs int64 indices, got {types[1]}; export with hilo_export (keep_indices is int64)")
    if data[0] not in DATA_TYPES or any(t != data[0] for t in data):
        raise PluginShapeError(f"hilo::{op} takes data of one type among {', '.join(DATA_TYPES)}; got {', '.join(types)}")


def gather_output_shape(data_shape: Sequence[Any], indices_shape: Sequence[Any]) -> tuple:
    """[B, K, C]: one row per index."""
    check_ranks(GATHER, (len(data_shape), len(indices_shape)))
    return (indices_shape[0], indices_shape[1], data_shape[2])


def scatter_output_shape(base_shape: Sequence[Any], indices_shape: Sequence[Any], updates_shape: Sequence[Any]) -> tuple:
    """[B, N, C]: the shape of base."""
    check_ranks(SCATTER, (len(base_shape), len(indices_shape), len(updates_shape)))
    return tuple(base_shape)


def autotune_types(op: str) -> str:
    """TensorRT AutoTuneCombination type string: data, indices, (updates,) output; '|' ties the data types."""
    data = "|".join(DATA_TYPES)
    return f"{data}, {INDEX_TYPE}, {data}" if op == GATHER else f"{data}, {INDEX_TYPE}, {data}, {data}"


# ------------------------------------------------------------------ launches


def gather_launch(data_shape: Sequence[Any], indices_shape: Sequence[Any]) -> dict[str, Any]:
    """Grid and int32 scalar arguments of the gather kernel: one program per (row, channel block)."""
    n, c = data_shape[1], data_shape[2]
    b, k = indices_shape[0], indices_shape[1]
    return {"grid": (b * k, cdiv(c, GATHER_BLOCK_C), 1), "scalars": (n, k, c), "constexprs": {"BLOCK_C": GATHER_BLOCK_C}}


def scatter_launch(base_shape: Sequence[Any], indices_shape: Sequence[Any]) -> dict[str, Any]:
    """Grid and int32 scalar arguments of the scatter kernel: one program per (row block, channel block)."""
    b, n, c = base_shape[0], base_shape[1], base_shape[2]
    k = indices_shape[1]
    return {
        "grid": (b * cdiv(n, SCATTER_BLOCK_N), cdiv(c, SCATTER_BLOCK_C), 1),
        "scalars": (n, k, c),
        "constexprs": {"BLOCK_N": SCATTER_BLOCK_N, "BLOCK_K": SCATTER_BLOCK_K, "BLOCK_C": SCATTER_BLOCK_C},
    }


def triton_signature(op: str, data_type: str) -> dict[str, str]:
    """The ``triton.compiler.ASTSource`` signature: pointer types, int32 scalars, constexprs."""
    pointer = TRITON_POINTER[data_type]
    types = {"indices": "*i64", "N": "i32", "K": "i32", "C": "i32"}
    params = GATHER_PARAMS if op == GATHER else SCATTER_PARAMS
    return {p: types.get(p, "constexpr" if p.startswith("BLOCK_") else pointer) for p in params}


# TensorRT keeps sizes in int32 kernel arguments; the kernels widen to int64 before
# multiplying, but each size itself must fit.
INT32_MAX = 2**31 - 1


def check_int32(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, int) and not 0 <= value <= INT32_MAX:
            raise PluginShapeError(f"{name} = {value} does not fit the kernels' int32 size arguments")


_ENTRY = re.compile(r"(\.entry\s+(\w+)\s*\()([^)]*)(\))", re.DOTALL)


def ptx_params(ptx: str, kernel_name: str) -> list[str]:
    """The parameter names of ``kernel_name``'s .entry in a PTX module, in order."""
    for match in _ENTRY.finditer(ptx):
        if match.group(2) == kernel_name:
            return [p.split()[-1] for p in match.group(3).split(",") if p.strip()]
    raise PluginShapeError(f"the PTX has no .entry {kernel_name}")


def fit_ptx_params(ptx: str, kernel_name: str, n_args: int) -> str:
    """PTX whose kernel takes exactly the ``n_args`` arguments a TensorRT AOT launch passes.

    Triton 3.3+ appends hidden pointers (global and profile scratch) to every kernel's
    parameters, and TensorRT's launch does not know them: the driver would read argument
    slots past the end of TensorRT's list. When the kernel body never loads those
    parameters (no scratch memory used), they are dropped from the .entry; if it does load
    one, the kernel cannot run as an AOT plugin and this says so.
    """
    params = ptx_params(ptx, kernel_name)
    if len(params) < n_args:
        raise PluginShapeError(f"{kernel_name} takes {len(params)} parameters, the plugin passes {n_args}")
    extra = params[n_args:]
    if not extra:
        return ptx
    used = [p for p in extra if re.search(rf"\[{re.escape(p)}(\+\d+)?\]", ptx)]
    if used:
        raise PluginShapeError(
            f"{kernel_name} reads hidden Triton parameters {used} (scratch memory), which a TensorRT AOT launch "
            "cannot provide; use block sizes or a Triton version that compile without scratch memory"
        )
    for match in _ENTRY.finditer(ptx):
        if match.group(2) == kernel_name:
            declarations = [d for d in match.group(3).split(",") if d.strip()][:n_args]
            body = ",".join(declarations).rstrip() + "\n"
            return ptx[: match.start(3)] + body + ptx[match.end(3):]
    raise AssertionError("unreachable: ptx_params found the entry")

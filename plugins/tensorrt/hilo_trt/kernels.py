"""Triton-lang kernels of the hilo token ops, and direct launchers for torch tensors.

The same kernels are compiled ahead of time into TensorRT engines (registration.py) and
launched directly by scripts/check_plugin_kernels.py and the CPU tests (TRITON_INTERPRET=1).
Argument order and block sizes come from layout.py; see it for the calling convention.
All offsets are computed in int64: B * N * C overflows int32 for large grids and batches.
Indices outside [0, N) read zeros (gather) or match no row (scatter) instead of touching
memory out of bounds; hilo_export and the C++ library reject such plans before a run.
"""

from __future__ import annotations

import triton
import triton.language as tl

from . import layout


@triton.jit
def token_gather_kernel(data, indices, N, K, C, out, BLOCK_C: tl.constexpr):
    # out[b, k, c] = data[b, indices[b, k], c]; program (row, channel block), row = b * K + k
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = row // K
    token = tl.load(indices + row)
    # an index outside the grid reads no channel (a bound of 0), which yields zeros
    readable = tl.where((token >= 0) & (token < N), C, 0)
    values = tl.load(data + (b * N + token) * C + cols, mask=cols < readable, other=0.0)
    tl.store(out + row * C + cols, values, mask=cols < C)


@triton.jit
def token_scatter_kernel(base, indices, updates, N, K, C, out,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr):
    # out[b, n, :] = updates[b, k, :] for the last k with indices[b, k] == n, else base[b, n, :].
    # Each program owns BLOCK_N output rows, so no two programs write the same element.
    pid = tl.program_id(0).to(tl.int64)
    n_blocks = (N + BLOCK_N - 1) // BLOCK_N
    b = pid // n_blocks
    rows = (pid % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    source = tl.full([BLOCK_N], -1, tl.int64)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K).to(tl.int64)
        k_ok = ks < K
        idx = tl.load(indices + b * K + ks, mask=k_ok, other=-1)
        hit = (idx[None, :] == rows[:, None]) & k_ok[None, :]
        source = tl.maximum(source, tl.max(tl.where(hit, ks[None, :], -1), axis=1))
    cols = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    inside = (rows < N)[:, None] & (cols < C)[None, :]
    updated = (source >= 0)[:, None]
    from_base = tl.load(base + (b * N + rows)[:, None] * C + cols[None, :], mask=inside & ~updated, other=0.0)
    from_updates = tl.load(updates + (b * K + source)[:, None] * C + cols[None, :], mask=inside & updated, other=0.0)
    tl.store(out + (b * N + rows)[:, None] * C + cols[None, :], tl.where(updated, from_updates, from_base), mask=inside)


def _grid(launch: dict) -> tuple[int, int, int]:
    return tuple(int(g) for g in launch["grid"])


def token_gather(data, indices):
    """Launch the gather kernel on torch tensors data[B, N, C], indices[B, K] (int64)."""
    import torch

    data, indices = data.contiguous(), indices.contiguous()
    b, n, c = data.shape
    k = indices.shape[1]
    layout.check_int32(N=n, K=k, C=c, rows=b * k)
    out = torch.empty((b, k, c), dtype=data.dtype, device=data.device)
    launch = layout.gather_launch(data.shape, indices.shape)
    token_gather_kernel[_grid(launch)](data, indices, *launch["scalars"], out, **launch["constexprs"])
    return out


def token_scatter(base, indices, updates):
    """Launch the scatter kernel on torch tensors base[B, N, C], indices[B, K], updates[B, K, C]."""
    import torch

    base, indices, updates = base.contiguous(), indices.contiguous(), updates.contiguous()
    _, n, c = base.shape
    layout.check_int32(N=n, K=indices.shape[1], C=c)
    out = torch.empty_like(base)
    launch = layout.scatter_launch(base.shape, indices.shape)
    token_scatter_kernel[_grid(launch)](base, indices, updates, *launch["scalars"], out, **launch["constexprs"])
    return out

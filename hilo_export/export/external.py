"""One external-data file of weights, shared by every graph of a build.

The weights are written once, in the build precision, streamed from a ``WeightSource`` one
tensor at a time (peak memory: about one tensor in two dtypes). Each graph then names its
weight initializers by file, offset and length (ONNX external data) instead of carrying a
copy: the ``hilo`` and ``full`` graphs of a 24 GB Flux add 24 GB to the disk, not 48 GB.

Initializer names: torch.onnx names a parameter by its path in the exported module, so the
weight ``transformer_blocks.0.attn.to_q.weight`` of ``EngineGraph.model`` is the initializer
``model.transformer_blocks.0.attn.to_q.weight``. Anything else (the low-frequency pooling
matrix) is a small constant of the graph and stays inside the ONNX file.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..files import atomic_path
from ..model.weights import WeightSource
from .dtypes import to_numpy

# offsets of tensors in the file are multiples of this (a page), so runtimes can map them
ALIGNMENT = 4096
MODEL_PREFIX = "model."  # EngineGraph's attribute that holds the model


@dataclass(frozen=True)
class WeightsFile:
    """The shared file and where each weight lives in it: key -> (offset, length in bytes, shape, dtype)."""

    path: Path
    layout: dict[str, tuple[int, int, tuple[int, ...], torch.dtype]]

    @property
    def location(self) -> str:
        return self.path.name  # relative: the graphs sit in the same folder

    @property
    def nbytes(self) -> int:
        return max((o + n for o, n, _, _ in self.layout.values()), default=0)


def plan_weights(source: WeightSource, dtype: torch.dtype, path: Path) -> WeightsFile:
    """Where each tensor goes: sorted by key, each at an ALIGNMENT boundary, floating tensors in ``dtype``.

    A function of the source's names, shapes and dtypes only, so a build that reuses the file
    knows its layout without reading it.
    """
    layout = {}
    offset = 0
    for key, (stored, shape) in sorted(source.entries().items()):
        target = dtype if stored.is_floating_point else stored
        length = math.prod(shape) * target.itemsize
        layout[key] = (offset, length, tuple(shape), target)
        offset += length + (-length % ALIGNMENT)
    return WeightsFile(path, layout)


def write_weights(source: WeightSource, weights: WeightsFile, progress: Callable[[str], None] = lambda _: None) -> str:
    """Write every tensor of ``source`` where ``weights`` places it, one tensor in memory at a time.

    Written atomically (the file appears only when complete) and in order, so its sha256 is
    computed on the way instead of reading 24 GB back; returns it.
    """
    total = weights.nbytes
    progress(f"writing {len(weights.layout)} weight tensors ({total / 1e9:.2f} GB) to {weights.path.name}")
    digest = hashlib.sha256()
    next_report = 0.1
    with atomic_path(weights.path) as tmp, open(tmp, "wb") as out:
        position = 0
        for key, (offset, length, shape, dtype) in sorted(weights.layout.items(), key=lambda item: item[1][0]):
            tensor = source.tensor(key)
            if tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            data = memoryview(tensor.contiguous().view(-1).view(torch.uint8).numpy())
            if data.nbytes != length or tuple(tensor.shape) != shape:
                raise ValueError(f"weight {key} changed while the build read it ({tuple(tensor.shape)}, expected {shape})")
            for chunk in (bytes(offset - position), data):  # alignment padding, then the tensor
                out.write(chunk)
                digest.update(chunk)
            position = offset + length
            del tensor, data  # one tensor in memory at a time
            if total and position / total >= next_report:
                progress(f"  {position / 1e9:.2f} / {total / 1e9:.2f} GB")
                next_report += 0.1
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def attach(model, weights: WeightsFile, constants: dict[str, torch.Tensor], base_dir: Path) -> None:
    """Point every initializer of the exported IR ``model`` at its data.

    ``model.<key>`` initializers become external tensors in the shared file (dtype and shape
    must match what was traced); ``constants`` (the graph's own buffers) are embedded.
    """
    import onnx_ir as ir

    from .graph import ExportError

    for name, value in model.graph.initializers.items():
        if name.startswith(MODEL_PREFIX) and name[len(MODEL_PREFIX):] in weights.layout:
            offset, length, shape, dtype = weights.layout[name[len(MODEL_PREFIX):]]
            if tuple(value.shape) != shape or _torch_dtype(value.dtype) != dtype:
                raise ExportError(f"initializer {name} was traced as {value.dtype} {list(value.shape)} "
                                  f"but the weights file holds {dtype} {list(shape)}")
            value.const_value = ir.ExternalTensor(
                weights.location, offset, length, value.dtype, shape=ir.Shape(shape), name=name, base_dir=str(base_dir)
            )
        elif name in constants:
            value.const_value = ir.tensor(to_numpy(constants[name].to(_torch_dtype(value.dtype))), dtype=value.dtype, name=name)
        else:
            raise ExportError(f"initializer {name} of the exported graph is neither a weight nor a constant of the graph")


def _torch_dtype(dtype) -> torch.dtype:
    import onnx_ir as ir

    return {ir.DataType.FLOAT: torch.float32, ir.DataType.FLOAT16: torch.float16, ir.DataType.BFLOAT16: torch.bfloat16,
            ir.DataType.INT64: torch.int64, ir.DataType.INT32: torch.int32, ir.DataType.BOOL: torch.bool}[dtype]


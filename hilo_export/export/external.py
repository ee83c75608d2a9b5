"""One external-data file of weights, shared by every graph of a build.

The weights are written once, in the build precision, streamed from a ``WeightSource`` one
tensor at a time (peak memory: about one tensor in two dtypes). Each graph then names its
weight initializers by file, offset and length (ONNX external data) instead of carrying a
copy: the ``hilo`` and ``full`` graphs of a 24 GB Flux add 24 GB to the disk, not 48 GB.

Initializer names: torch.onnx names a parameter by its path in the exported module, so the
weight ``transformer_blocks.0.attn.to_q.weight`` of ``EngineGraph.model`` is the initializer
``model.transformer_blocks.0.attn.to_q.weight``. Anything else (the low-frequency pooling
matrix) is a small constant of the graph and stays inside the ONNX file.

Linear weights are stored transposed, ``[in, out]``, the layout ``MatMul`` reads. A traced
``nn.Linear`` on 3-D activations is ``MatMul(x, Transpose(W))``, and runtimes fold that
``Transpose`` into a private copy of the weight per session (ONNX Runtime: one per graph, so
``hilo`` and ``full`` held the model twice more besides the shared mapping). With ``W``
stored as ``MatMul`` wants it, ``attach`` drops the ``Transpose`` and every graph reads the
one shared file.
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
from ..folder.dtypes import to_numpy
from ..model.weights import WeightSource
from .errors import ExportError

# offsets of tensors in the file are multiples of this (a page), so runtimes can map them
ALIGNMENT = 4096
MODEL_PREFIX = "model."  # EngineGraph's attribute that holds the model


@dataclass(frozen=True)
class Placement:
    """Where one weight lives in the file: ``shape`` as stored (reversed when ``transposed``)."""

    offset: int
    length: int  # bytes
    shape: tuple[int, ...]
    dtype: torch.dtype
    transposed: bool = False


@dataclass(frozen=True)
class WeightsFile:
    """The shared file and where each weight lives in it, by state_dict key."""

    path: Path
    layout: dict[str, Placement]

    @property
    def location(self) -> str:
        return self.path.name  # relative: the graphs sit in the same folder

    @property
    def nbytes(self) -> int:
        return max((p.offset + p.length for p in self.layout.values()), default=0)


def linear_weights(model: torch.nn.Module) -> frozenset[str]:
    """State-dict keys of every ``nn.Linear`` weight of ``model`` (a meta model will do): stored transposed."""
    return frozenset(f"{name}.weight" if name else "weight"
                     for name, module in model.named_modules() if isinstance(module, torch.nn.Linear))


def plan_weights(source: WeightSource, dtype: torch.dtype, path: Path, transpose: frozenset[str] = frozenset()) -> WeightsFile:
    """Where each tensor goes: sorted by key, each at an ALIGNMENT boundary, floating tensors in ``dtype``,
    the 2-D tensors named in ``transpose`` stored transposed.

    A function of the source's names, shapes and dtypes (and ``transpose``) only, so a build that
    reuses the file knows its layout without reading it.
    """
    layout = {}
    offset = 0
    for key, (stored, shape) in sorted(source.entries().items()):
        target = dtype if stored.is_floating_point else stored
        length = math.prod(shape) * target.itemsize
        transposed = key in transpose and len(shape) == 2
        layout[key] = Placement(offset, length, tuple(reversed(shape)) if transposed else tuple(shape), target, transposed)
        offset += length + (-length % ALIGNMENT)
    return WeightsFile(path, layout)


# below this, writing takes seconds and a tenth-by-tenth report would only repeat "0.00 GB"
PROGRESS_MIN_BYTES = 10**9


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
        for key, place in sorted(weights.layout.items(), key=lambda item: item[1].offset):
            tensor = source.tensor(key)
            _check_finite(key, tensor)
            if tensor.dtype != place.dtype:
                tensor = tensor.to(place.dtype)
                _check_finite(key, tensor, converted=True)
            if place.transposed:
                tensor = tensor.t()
            data = memoryview(tensor.contiguous().view(-1).view(torch.uint8).numpy())
            if data.nbytes != place.length or tuple(tensor.shape) != place.shape:
                raise ExportError(f"weight {key} changed while the build read it ({tuple(tensor.shape)}, expected {place.shape})")
            for chunk in (bytes(place.offset - position), data):  # alignment padding, then the tensor
                out.write(chunk)
                digest.update(chunk)
            position = place.offset + place.length
            del tensor, data  # one tensor in memory at a time
            if total >= PROGRESS_MIN_BYTES and position / total >= next_report:
                progress(f"  {position / 1e9:.2f} / {total / 1e9:.2f} GB")
                next_report += 0.1
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _check_finite(key: str, tensor: torch.Tensor, converted: bool = False) -> None:
    """A NaN or Inf weight would only show later as "graph differs from torch by nan": name it here."""
    if not tensor.is_floating_point():
        return
    finite = torch.isfinite(tensor.float() if tensor.dtype.itemsize == 1 else tensor)  # no float8 kernel
    if bool(finite.all()):
        return
    if converted:
        raise ExportError(f"weight {key} holds values beyond {str(tensor.dtype).removeprefix('torch.')}'s range "
                          f"(it overflows to infinity); build with --precision bf16 or fp32")
    bad = int((~finite).sum())
    raise ExportError(f"weight {key} holds NaN or infinite values ({bad} of {tensor.numel()}); fix the checkpoint "
                      "(the model would compute NaN)")


def attach(model, weights: WeightsFile, constants: dict[str, torch.Tensor], base_dir: Path) -> None:
    """Point every initializer of the exported IR ``model`` at its data.

    ``model.<key>`` initializers become external tensors in the shared file (dtype and shape
    must match what was traced); ``constants`` (the graph's own buffers) are embedded. A weight
    stored transposed is rewired where it is read (``read_transposed``).
    """
    import onnx_ir as ir

    for name, value in list(model.graph.initializers.items()):
        if name.startswith(MODEL_PREFIX) and name[len(MODEL_PREFIX):] in weights.layout:
            place = weights.layout[name[len(MODEL_PREFIX):]]
            traced = tuple(reversed(place.shape)) if place.transposed else place.shape
            if tuple(value.shape) != traced or _torch_dtype(value.dtype) != place.dtype:
                raise ExportError(f"initializer {name} was traced as {value.dtype} {list(value.shape)} "
                                  f"but the weights file holds {place.dtype} {list(traced)}")
            value.const_value = ir.ExternalTensor(weights.location, place.offset, place.length, value.dtype,
                                                  shape=ir.Shape(place.shape), name=name, base_dir=str(base_dir))
            if place.transposed:
                value.shape = ir.Shape(place.shape)
                read_transposed(model.graph, value)
        elif name in constants:
            value.const_value = ir.tensor(to_numpy(constants[name].to(_torch_dtype(value.dtype))), dtype=value.dtype, name=name)
        else:
            raise ExportError(f"initializer {name} of the exported graph is neither a weight nor a constant of the graph")


def read_transposed(graph, weight) -> None:
    """Rewire the readers of ``weight``, now stored transposed ([in, out] instead of [out, in]).

    ``Transpose(W)`` becomes ``W`` itself, ``Gemm``'s ``transB`` flips, and any other reader
    gets a ``Transpose`` back to the traced layout (correct, but a runtime may fold it into a
    copy; torch's Linear traces only the first two).
    """
    import onnx_ir as ir

    for node, index in list(weight.uses()):
        perm = node.attributes.get("perm")
        if node.op_type == "Transpose" and (perm is None or list(perm.as_ints()) == [1, 0]):
            node.outputs[0].replace_all_uses_with(weight)
            graph.remove(node, safe=True)
        elif node.op_type == "Gemm" and index == 1:
            flipped = 1 - (node.attributes["transB"].as_int() if "transB" in node.attributes else 0)
            node.attributes["transB"] = ir.AttrInt64("transB", flipped)
        else:
            back = ir.Node("", "Transpose", [weight], attributes=[ir.AttrInt64s("perm", [1, 0])])
            graph.insert_before(node, back)
            node.replace_input_with(index, back.outputs[0])


def _torch_dtype(dtype) -> torch.dtype:
    import onnx_ir as ir

    return {ir.DataType.FLOAT: torch.float32, ir.DataType.FLOAT16: torch.float16, ir.DataType.BFLOAT16: torch.bfloat16,
            ir.DataType.INT64: torch.int64, ir.DataType.INT32: torch.int32, ir.DataType.BOOL: torch.bool}[dtype]


"""Engine backends behind one small interface.

A backend turns one exported ONNX graph into engine files with one profile per bucket
(``build``) and runs them (``load`` -> ``Runner``). Feeds and results are torch tensors keyed
by the engine's input and output names, on the runner's ``device``: ONNX Runtime binds them
by pointer (IO binding), TensorRT reads device pointers on the caller's stream, torch runs
them as they are. Numpy feeds still work (``numpy_io``: numpy in, numpy out). No backend type
leaks out of here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from ...errors import HiLoError


class BackendError(HiLoError, RuntimeError):
    """A backend is missing or cannot run here; the message says what to install or change."""


@dataclass(frozen=True)
class Profile:
    """One bucket's shapes: the ``k_kept`` axis runs from ``low`` to ``kept`` (both default to
    exactly ``kept``: padded sizing), engines tuned for ``opt`` (planning.buckets.kept_range)."""

    bucket: str
    kept: int
    low: int | None = None
    opt: int | None = None

    @property
    def shape_range(self) -> tuple[int, int, int]:
        """(min, opt, max) of ``k_kept``."""
        low = self.kept if self.low is None else self.low
        opt = self.kept if self.opt is None else self.opt
        if not 1 <= low <= opt <= self.kept:
            raise BackendError(f"bucket {self.bucket}: k_kept range {low}..{self.kept} with opt {opt} is not ordered; rebuild the folder")
        return low, opt, self.kept

    @classmethod
    def of(cls, bucket: dict) -> "Profile":
        """The profile of a manifest bucket entry."""
        p = bucket["profile"]
        return cls(bucket["name"], p["max"], p["min"], p["opt"])


class Runner(Protocol):
    output_names: list[str]
    device: torch.device  # where feeds are read and outputs are made

    def run(self, bucket: str, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Feeds on ``device`` in the engine's dtypes (numpy arrays: numpy results, see numpy_io)."""


def numpy_io(run: Callable[..., dict[str, torch.Tensor]]) -> Callable[..., dict[str, Any]]:
    """Wrap a runner's ``run`` so numpy feeds keep working: converted to tensors (zero-copy on the
    CPU) and the results back to numpy. Torch feeds pass straight through, untouched."""

    @functools.wraps(run)
    def wrapped(self, bucket: str, feeds: dict[str, Any]) -> dict[str, Any]:
        if not any(isinstance(v, np.ndarray) for v in feeds.values()):
            return run(self, bucket, feeds)
        from ..dtypes import from_numpy, to_numpy  # bfloat16 arrays need ml_dtypes; the torch path does not

        tensors = {k: from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v for k, v in feeds.items()}
        return {k: to_numpy(v) for k, v in run(self, bucket, tensors).items()}

    return wrapped


# ONNX TensorProto element types of the torch dtypes engines use (ONNX Runtime's IO binding takes them)
ONNX_TYPES = {torch.float32: 1, torch.uint8: 2, torch.int8: 3, torch.int32: 6, torch.int64: 7, torch.bool: 9,
              torch.float16: 10, torch.float64: 11, torch.bfloat16: 16}
# manifest dtype names (numpy's) -> torch
TORCH_DTYPES = {"float32": torch.float32, "uint8": torch.uint8, "int8": torch.int8, "int32": torch.int32,
                "int64": torch.int64, "bool": torch.bool, "float16": torch.float16, "float64": torch.float64,
                "bfloat16": torch.bfloat16}


class Backend(Protocol):
    name: str
    portable: bool  # whether its engine files run on other versions and devices than they were built on

    def version(self) -> str: ...

    def device(self) -> str: ...

    def check_precision(self, precision: str) -> None: ...

    def build(self, onnx_path: Path, profiles: list[Profile], precision: str, out_dir: Path, key: str,
              source: Any = None) -> list[Path]:
        """``source``: what the graph was exported from; only a backend serving the model itself (torch) reads it."""

    def load(self, onnx_path: Path, engine_files: list[Path], profiles: list[Profile],
             read: Callable[[Path], bytes] | None = None) -> Runner: ...


# the backends a folder can be built for, by the name manifests and the CLI use: the one list of them
BACKENDS = ("ort", "trt", "torch")


def get_backend(name: str, plugins: bool = False, engine_module: Callable[..., torch.nn.Module] | None = None) -> Backend:
    """``plugins``: build the hilo ops as TensorRT plugins instead of inlining their ONNX bodies.
    ``engine_module``: how the torch backend makes a graph's module from the model's class, config,
    weights and graph spec (model code lives above this layer; the runtime and the exporter pass
    ``hilo_export.model.engine.engine_module``)."""
    if plugins and name != "trt":
        raise BackendError(
            "--plugins builds the hilo ops into TensorRT engines as plugins; it needs --backend trt "
            "(ONNX Runtime runs the ops' ONNX function bodies and needs no plugin)"
        )
    if name == "ort":
        from .ort import OrtBackend

        return OrtBackend()
    if name == "trt":
        from .trt import TrtBackend

        return TrtBackend(plugins=plugins)
    if name == "torch":
        from .torch import TorchBackend

        return TorchBackend(engine_module)
    raise BackendError(f"unknown backend {name!r}: use {', '.join(BACKENDS)} (ort: ONNX Runtime, the default; "
                       "trt: TensorRT; torch: the compressed transformer in torch)")

"""Engine backends behind one small interface.

A backend turns one exported ONNX graph into engine files with one profile per bucket
(``build``) and runs them (``load`` -> ``Runner``). Feeds and results are numpy arrays keyed
by the engine's input and output names; no backend type leaks out of here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

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

    def run(self, bucket: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend(Protocol):
    name: str
    portable: bool  # whether its engine files run on other versions and devices than they were built on

    def version(self) -> str: ...

    def device(self) -> str: ...

    def check_precision(self, precision: str) -> None: ...

    def build(self, onnx_path: Path, profiles: list[Profile], precision: str, out_dir: Path, key: str) -> list[Path]: ...

    def load(self, onnx_path: Path, engine_files: list[Path], profiles: list[Profile],
             read: Callable[[Path], bytes] | None = None) -> Runner: ...


# the backends a folder can be built for, by the name manifests and the CLI use: the one list of them
BACKENDS = ("ort", "trt")


def get_backend(name: str, plugins: bool = False) -> Backend:
    """``plugins``: build the hilo ops as TensorRT plugins instead of inlining their ONNX bodies."""
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
    raise BackendError(f"unknown backend {name!r}: use {' or '.join(BACKENDS)} (ort: ONNX Runtime, the default; "
                       "trt: TensorRT)")

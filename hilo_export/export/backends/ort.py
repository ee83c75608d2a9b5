"""ONNX Runtime: the embedded default. CPU here; CUDA when onnxruntime-gpu works.

An ORT "engine" is the exported ONNX file itself. By default one session with a dynamic
``k_kept`` axis serves every bucket of a graph: one copy of the weights. With ``fix_k`` each
bucket gets its own session with the axis fixed to its size; on flux-shaped at 1024x1024 on
the CPU that was 0-9% faster per step (within this machine's run-to-run noise) for a copy of
the weights and an arena per bucket, so it is an option, not the default (README, Measured).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ...planning.buckets import K_AXIS
from . import BackendError, Profile


class OrtBackend:
    name = "ort"
    portable = True  # an ONNX file runs on any ORT version and device

    def __init__(self, fix_k: bool = False, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError as err:
            raise BackendError("the ort backend needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu)") from err
        self._ort = onnxruntime
        self.fix_k = fix_k
        self.threads = threads

    def version(self) -> str:
        return self._ort.__version__

    def providers(self) -> list[str]:
        available = self._ort.get_available_providers()
        # ORT's TensorRT provider needs TensorRT itself; the trt backend is the way to TensorRT
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]

    def device(self) -> str:
        return "cuda" if "CUDAExecutionProvider" in self.providers() else "cpu"

    def check_precision(self, precision: str) -> None:
        pass  # ONNX files of every precision build anywhere; where they run is the runtime's question

    def build(self, onnx_path: Path, profiles: list[Profile], precision: str, out_dir: Path, key: str) -> list[Path]:
        return []  # the ONNX file is the engine

    def load(self, onnx_path: Path, engine_files: list[Path], profiles: list[Profile]) -> "OrtRunner":
        return OrtRunner(self, onnx_path, profiles)

    def session(self, onnx_path: Path, kept: int | None):
        options = self._ort.SessionOptions()
        if kept is not None:
            options.add_free_dimension_override_by_name(K_AXIS, kept)
        if self.threads:
            options.intra_op_num_threads = self.threads
        try:
            return self._ort.InferenceSession(str(onnx_path), options, providers=self.providers())
        except self._ort.capi.onnxruntime_pybind11_state.NotImplemented as err:
            # ORT's CPU provider has no bfloat16 kernels for most ops (Mul, MatMul, ...)
            raise BackendError(
                f"ONNX Runtime {self.version()} on {self.device()} has no kernel for a node of {onnx_path.name} "
                f"({str(err).split(':')[-1].strip()}); a bf16 folder needs a GPU (onnxruntime-gpu, or --backend trt): "
                "on a CPU, build with --precision fp16 or fp32"
            ) from None


class OrtRunner:
    """Sessions are created on first use and shared; ``InferenceSession.run`` is thread-safe."""

    def __init__(self, backend: OrtBackend, onnx_path: Path, profiles: list[Profile]):
        self._backend = backend
        self._path = onnx_path
        self._kept = {p.bucket: p.kept for p in profiles}
        self._sessions: dict[int | None, object] = {}
        self._lock = threading.Lock()
        self.output_names = [o.name for o in self._session(profiles[0].bucket).get_outputs()]

    def _session(self, bucket: str):
        kept = self._kept[bucket] if self._backend.fix_k else None
        with self._lock:
            if kept not in self._sessions:
                self._sessions[kept] = self._backend.session(self._path, kept)
            return self._sessions[kept]

    def run(self, bucket: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._session(bucket).run(self.output_names, feeds)
        return dict(zip(self.output_names, outputs))

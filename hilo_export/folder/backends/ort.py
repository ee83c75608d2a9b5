"""ONNX Runtime: the embedded default. CPU here; CUDA when onnxruntime-gpu works.

An ORT "engine" is the exported ONNX file itself. By default one session with a dynamic
``k_kept`` axis serves every bucket of a graph. On the CPU every session of a backend also reads
its weights from one read-only mapping of the build's shared weights file (``SharedWeights``), so
the ``hilo`` and ``full`` graphs hold one copy of the weights in memory, not one each. With ``fix_k`` each
bucket gets its own session with the axis fixed to its size; on flux-shaped at 1024x1024 on
the CPU that was 0-9% faster per step (within this machine's run-to-run noise) for a copy of
the weights and an arena per bucket, so it is an option, not the default (README, Measured).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ...errors import install_hint, require
from ...files import confined, regular_file
from ...planning.buckets import K_AXIS
from ..manifest import ManifestError
from . import ONNX_TYPES, BackendError, Profile, numpy_io


class OrtBackend:
    name = "ort"
    portable = True  # an ONNX file runs on any ORT version and device

    def __init__(self, fix_k: bool = False, threads: int | None = None, arena: bool = False, share_weights: bool = True):
        """``arena``: ONNX Runtime's CPU arena and memory patterns, off by default (see ``session``).
        ``share_weights``: one in-memory copy of the external weights for all sessions (CPU only; see
        ``SharedWeights``); False lets each session load and pre-pack its own copy."""
        self._ort = require("onnxruntime", BackendError, f"the ort backend needs ONNX Runtime: {install_hint('ort')}")
        self.fix_k = fix_k
        self.threads = threads
        self.arena = arena
        self.share_weights = share_weights
        self._shared: SharedWeights | None = None

    def version(self) -> str:
        return self._ort.__version__

    def providers(self) -> list[str]:
        available = self._ort.get_available_providers()
        # ORT's TensorRT provider needs TensorRT itself; the trt backend is the way to TensorRT
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]

    def device(self) -> str:
        return "cuda" if "CUDAExecutionProvider" in self.providers() else "cpu"

    def session_providers(self) -> list:
        """The providers a session gets. On CUDA ORT computes on torch's current stream, so its
        work is ordered with the caller's kernels without a synchronization in between."""
        if self.device() != "cuda" or not torch.cuda.is_available():
            return self.providers()
        stream = torch.cuda.current_stream()
        options = {"device_id": stream.device.index or 0, "user_compute_stream": str(stream.cuda_stream)}
        return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]

    def check_precision(self, precision: str) -> None:
        pass  # ONNX files of every precision build anywhere; where they run is the runtime's question

    def build(self, onnx_path: Path, profiles: list[Profile], precision: str, out_dir: Path, key: str,
              source=None) -> list[Path]:
        return []  # the ONNX file is the engine

    def load(self, onnx_path: Path, engine_files: list[Path], profiles: list[Profile],
             read: Callable[[Path], bytes] | None = None) -> "OrtRunner":
        """``read``: how to get the ONNX file's bytes (the runtime passes one that checks their sha256
        after reading them, so the session runs exactly what was verified); None: ORT reads the path
        (files with external weights, which ORT must resolve beside the file)."""
        return OrtRunner(self, onnx_path, profiles, read)

    def session(self, model: Path | bytes, kept: int | None, where: Path | None = None,
                read: Callable[[Path], bytes] | None = None):
        """``model``: the ONNX file, or its (verified) bytes read from ``where``; ``read``: how to get the
        bytes of its external-data files (the runtime's checks them against the manifest)."""
        options = self._ort.SessionOptions()
        if kept is not None:
            options.add_free_dimension_override_by_name(K_AXIS, kept)
        if self.threads:
            options.intra_op_num_threads = self.threads
        # Serving changes the token axis per bucket. ORT's CPU arena keeps the peak of every shape it
        # has seen, and memory patterns cache one plan (and block) per shape: memory grew from 9 GB
        # to 21-23 GB on flux-shaped. Without them activations are freed after each run.
        options.enable_cpu_mem_arena = self.arena
        options.enable_mem_pattern = self.arena
        path = model if isinstance(model, Path) else where
        if isinstance(model, bytes) and where is not None:  # external data lies beside the file
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(where.parent))
        shared = False
        if self.share_weights and path is not None and self.device() == "cpu":
            self._shared = self._shared or SharedWeights(self._ort)
            shared = self._shared.add_to(options, model if isinstance(model, bytes) else path, path.parent, read)
            if shared:
                # ORT would otherwise pre-pack each MatMul weight into a private buffer per session
                options.add_session_config_entry("session.disable_prepacking", "1")
        if not shared and read is not None and path is not None:
            # ONNX Runtime reads the external data itself: check those bytes right before it does
            for file in external_files(model if isinstance(model, bytes) else path, path.parent):
                read(file)
        source = model if isinstance(model, bytes) else str(model)
        name = path.name if path is not None else "the graph"
        try:
            return self._ort.InferenceSession(source, options, providers=self.session_providers())
        except self._ort.capi.onnxruntime_pybind11_state.NotImplemented as err:
            # ORT's CPU provider has no bfloat16 kernels for most ops (Mul, MatMul, ...)
            raise BackendError(
                f"ONNX Runtime {self.version()} on {self.device()} has no kernel for a node of {name} "
                f"({str(err).split(':')[-1].strip()}); a bf16 folder needs a GPU (onnxruntime-gpu, or --backend trt): "
                "on a CPU, build with --precision fp16 or fp32"
            ) from None
        except (self._ort.capi.onnxruntime_pybind11_state.Fail, self._ort.capi.onnxruntime_pybind11_state.InvalidArgument,
                self._ort.capi.onnxruntime_pybind11_state.InvalidGraph, self._ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
                self._ort.capi.onnxruntime_pybind11_state.NoSuchFile) as err:
            # a graph ORT cannot load (unknown op domain, wrong types): the folder's content, not this machine
            first = str(err).strip().splitlines()[0][:300]
            raise BackendError(f"ONNX Runtime {self.version()} cannot load {path or name} ({first}); "
                               "rebuild the folder with hilo-export build") from None


class OrtRunner:
    """Sessions are created on first use and shared; ``InferenceSession.run`` is thread-safe.

    Feeds are bound by pointer (IO binding) where they lie, on the session's device; ONNX
    Runtime allocates the outputs there and they come back as torch tensors through DLPack,
    so neither direction copies (on the CPU, nor through the host on CUDA).
    """

    def __init__(self, backend: OrtBackend, onnx_path: Path, profiles: list[Profile],
                 read: Callable[[Path], bytes] | None = None):
        self._backend = backend
        self._kept = {p.bucket: p.kept for p in profiles}
        self._sessions: dict[int | None, object] = {}
        self._lock = threading.Lock()
        # read (and verify) once; the bytes are kept only while more sessions may be made from them
        self._model: Path | bytes | None = read(onnx_path) if read is not None else onnx_path
        self._path, self._read = onnx_path, read
        first = self._session(profiles[0].bucket)
        self.output_names = [o.name for o in first.get_outputs()]
        self._input_names = [i.name for i in first.get_inputs()]
        # a CPU-only torch beside onnxruntime-gpu: tensors are bound on the CPU and ORT copies them
        on_gpu = backend.device() == "cuda" and torch.cuda.is_available()
        self.device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
        if not backend.fix_k:
            self._model = None

    def _session(self, bucket: str):
        kept = self._kept[bucket] if self._backend.fix_k else None
        with self._lock:
            if kept not in self._sessions:
                self._sessions[kept] = self._backend.session(self._model, kept, self._path, self._read)
            return self._sessions[kept]

    @numpy_io
    def run(self, bucket: str, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        session = self._session(bucket)
        binding = session.io_binding()
        kind, index = self.device.type, self.device.index or 0
        bound = []  # the bound tensors must live until the run is over
        for name in self._input_names:
            tensor = feeds[name].to(self.device).contiguous()  # no copy when already there and dense
            bound.append(tensor)
            binding.bind_input(name, kind, index, ONNX_TYPES[tensor.dtype], tuple(tensor.shape), tensor.data_ptr())
        for name in self.output_names:
            binding.bind_output(name, kind, index)
        session.run_with_iobinding(binding)
        return {name: torch.from_dlpack(value) for name, value in zip(self.output_names, binding.get_outputs())}


class SharedWeights:
    """One read-only memory mapping per external-data file, handed to every session as initializers.

    ONNX Runtime loads an external initializer into each session that uses it (and pre-packs MatMul
    weights into a second private copy), so a folder's ``hilo`` and ``full`` graphs cost two or
    more copies of the model. ``SessionOptions.add_initializer`` gives a session an initializer it
    does not copy; mapped from the shared file, every session reads the same pages.
    """

    def __init__(self, ort):
        self._ort = ort
        self._maps: dict[Path, np.memmap] = {}
        self._values: dict[tuple, object] = {}  # the OrtValues must outlive every session using them

    def add_to(self, options, model: Path | bytes, folder: Path, read: Callable[[Path], bytes] | None = None) -> bool:
        """Give ``options`` every external initializer of ``model`` (a file, or its bytes) from the shared copy.

        ``read``: how to get a data file's bytes checked against the manifest. Those bytes are then
        held (one copy for every session), so what runs is what was checked, however the file changes
        later; without it the file is mapped read-only. False (nothing added) when the graph has no
        external data or a type numpy cannot map (bfloat16): ONNX Runtime then loads the file itself.
        """
        import onnx
        from onnx import helper

        proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model), load_external_data=False)
        external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        if not external or any(t.data_type == onnx.TensorProto.BFLOAT16 for t in external):
            return False
        values = []
        for tensor in external:
            info = {entry.key: entry.value for entry in tensor.external_data}
            file = _data_file(folder, info.get("location"))
            offset, length = int(info.get("offset", 0)), int(info["length"])
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
            key = (file, offset, length, dtype.str, tuple(tensor.dims))
            if key not in self._values:
                if file not in self._maps:
                    self._maps[file] = np.frombuffer(read(file), np.uint8) if read else np.memmap(file, dtype=np.uint8, mode="r")
                if offset + length > self._maps[file].size:
                    raise ManifestError(f"{file} is {self._maps[file].size} bytes, but {tensor.name} reads up to byte "
                                        f"{offset + length} (a truncated copy?); rebuild the folder with hilo-export build")
                array = self._maps[file][offset:offset + length].view(dtype).reshape(tuple(tensor.dims))
                self._values[key] = self._ort.OrtValue.ortvalue_from_numpy(array)
            values.append((tensor.name, self._values[key]))
        for name, value in values:
            options.add_initializer(name, value)
        return True


def external_files(model: Path | bytes, folder: Path) -> list[Path]:
    """The external-data files a graph reads, confined to ``folder``."""
    import onnx

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model), load_external_data=False)
    locations = {entry.value for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                 for entry in t.external_data if entry.key == "location"}
    return [_data_file(folder, location) for location in sorted(locations)]


def _data_file(folder: Path, location) -> Path:
    """An external-data location, checked before anything maps it: inside the folder, a regular file."""
    fix = "rebuild the folder with hilo-export build"
    path = confined(folder, location, ManifestError, fix, where=f"a graph in {folder}")
    regular_file(path, ManifestError, "external data must be a plain file inside the folder: " + fix, inside=folder)
    return path

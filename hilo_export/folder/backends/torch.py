"""torch: the compressed transformer served natively, per bucket, on any torch device.

``build`` writes two engine files beside the ONNX graph: the model's weights in the build's
precision (``weights-<key>.torch.safetensors``, streamed one tensor at a time and shared by the
graphs of a build) and a small JSON naming the model class, its config and the graph spec.
``load`` makes the graph's module from them with an ``engine_module`` factory handed in from
above (the model code, ``hilo_export.model.engine``; this layer imports none of it), so the
runtime serves a torch folder without the exporter and without the original model files.

``TorchRunner`` runs that module with static shapes per bucket: on a GPU each (bucket, shape)
is captured once as a CUDA graph and replayed; ``compile=True`` wraps the module in
``torch.compile`` (``dynamic=False``: one specialization per shape). Imports torch and the
standard library only, so the GPU check runs where only torch is installed.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
from pathlib import Path
from typing import Any, Callable

import torch

from ...files import atomic_path
from . import BackendError, Profile, numpy_io

log = logging.getLogger(__name__)

# safetensors' dtype names
_ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
              torch.bool: "BOOL"}
ENGINE_SUFFIX = ".torch.json"
MAX_GRAPHS = 16  # CUDA graphs kept per runner (exact sizing plans many lengths; past this they run eagerly)

EngineFactory = Callable[[str, dict, dict, dict, torch.device], torch.nn.Module]


class TorchBackend:
    name = "torch"
    portable = True  # weights and a spec: they run on any torch version and device

    def __init__(self, engine_module: EngineFactory | None = None, device: str | torch.device | None = None,
                 compile: bool = False, cuda_graphs: bool | None = None):
        """``device``: where the modules run (default: the first GPU if torch sees one, else the CPU).
        ``cuda_graphs``: capture each bucket's shapes (default: on a GPU). ``compile``: torch.compile."""
        self.engine_module = engine_module
        self._device = torch.device(device) if device is not None else None
        self.compile = compile
        self.cuda_graphs = cuda_graphs

    def version(self) -> str:
        return torch.__version__

    def device(self) -> str:
        return self.torch_device().type

    def torch_device(self) -> torch.device:
        if self._device is not None:
            return self._device
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")

    def check_precision(self, precision: str) -> None:
        pass  # torch runs every precision on every device (bf16 on a CPU slowly)

    def build(self, onnx_path: Path, profiles: list[Profile], precision: str, out_dir: Path, key: str,
              source: Any = None) -> list[Path]:
        """``source``: what the graph was exported from (``class_name``, ``config``, ``spec``,
        ``weights``: entries()/tensor(key), ``weights_key``, ``dtype``); the exporter passes it."""
        if source is None:
            raise BackendError("the torch backend builds from the exported model's weights; build with hilo-export build --backend torch")
        weights = out_dir / f"weights-{source.weights_key[:16]}.torch.safetensors"
        if not weights.exists():  # named by its content's key and written atomically: present means complete
            write_safetensors(weights, source.weights, source.dtype)
        spec_path = out_dir / f"{onnx_path.stem}-{key[:16]}{ENGINE_SUFFIX}"
        description = {"class": source.class_name, "config": source.config, "spec": source.spec,
                       "precision": precision, "weights": weights.name}
        with atomic_path(spec_path) as tmp:
            tmp.write_text(json.dumps(description, indent=2) + "\n")
        return [spec_path, weights]

    def load(self, onnx_path: Path, engine_files: list[Path], profiles: list[Profile],
             read: Callable[[Path], bytes] | None = None) -> "TorchRunner":
        """``read``: how to get a file's bytes (the runtime's checks their sha256 once read)."""
        if self.engine_module is None:
            raise BackendError("the torch backend needs the model code to make its modules: load the folder with "
                               "HiLoRuntime.load(folder, backend='torch')")
        read = read or Path.read_bytes
        spec_path = next((p for p in engine_files if p.name.endswith(ENGINE_SUFFIX)), None)
        if spec_path is None:
            raise BackendError(f"{onnx_path.parent} has no torch engine files; build it with --backend torch")
        description = json.loads(read(spec_path))
        weights_path = spec_path.parent / description["weights"]
        from safetensors.torch import load as load_safetensors

        device = self.torch_device()
        state = {k: v.to(device) for k, v in load_safetensors(read(weights_path)).items()}
        module = self.engine_module(description["class"], description["config"], state, description["spec"], device)
        return TorchRunner(module, device, compile=self.compile, cuda_graphs=self.cuda_graphs)


class TorchRunner:
    """Runs one graph's module (``input_names``/``output_names`` attributes) on ``device``.

    Feeds are moved to ``device`` and the module's dtypes only where they differ; results stay
    on ``device``. One call at a time per runner (a captured graph has one set of buffers).
    """

    def __init__(self, module: torch.nn.Module, device: torch.device | str = "cpu", compile: bool = False,
                 cuda_graphs: bool | None = None):
        self.device = torch.device(device)
        self.module = module.eval()
        self.input_names = list(module.input_names)
        self.output_names = list(module.output_names)
        self._call = torch.compile(self.module, dynamic=False) if compile else self.module
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and self.device.type != "cuda":
            raise BackendError("CUDA graphs need a CUDA device; run the torch backend on a GPU or without cuda_graphs")
        self._graphs: dict[tuple, tuple[Any, list[torch.Tensor], tuple[torch.Tensor, ...]]] = {}
        self._pool = None
        self._lock = threading.Lock()

    @numpy_io
    def run(self, bucket: str, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tensors = [feeds[name].to(self.device) for name in self.input_names]
        with self._lock, torch.inference_mode():
            if not self.cuda_graphs:
                outputs = self._call(*tensors)
            else:
                outputs = self._replay(tensors)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return dict(zip(self.output_names, outputs))

    def _replay(self, tensors: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        key = tuple((tuple(t.shape), t.dtype) for t in tensors)  # static shapes: one graph per shape
        if key not in self._graphs:
            if len(self._graphs) >= MAX_GRAPHS:
                log.info("torch backend: %d CUDA graphs captured; shape %s runs eagerly", MAX_GRAPHS, key[-2:])
                return self._call(*tensors)
            self._graphs[key] = self._capture(tensors)
        graph, static_inputs, static_outputs = self._graphs[key]
        for static, tensor in zip(static_inputs, tensors):
            static.copy_(tensor)
        graph.replay()
        # the captured outputs are overwritten by the next replay: hand out copies (on the device)
        return tuple(t.clone() for t in static_outputs)

    def _capture(self, tensors: list[torch.Tensor]):
        static_inputs = [t.clone() for t in tensors]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the capture: lazy init, kernel choice, compile
                self._call(*static_inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()  # one memory pool for every shape: replays never overlap
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            outputs = self._call(*static_inputs)
        return graph, static_inputs, outputs if isinstance(outputs, tuple) else (outputs,)


def write_safetensors(path: Path, weights: Any, dtype: torch.dtype) -> None:
    """Write ``weights`` (entries() and tensor(key), the exporter's WeightSource) as one safetensors
    file, floating-point tensors cast to ``dtype``, one tensor in memory at a time."""
    entries = weights.entries()
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    stored = {}
    for key, (stored_dtype, shape) in entries.items():
        kind = dtype if stored_dtype.is_floating_point else stored_dtype
        if kind not in _ST_DTYPES:
            raise BackendError(f"weight {key} is {kind}, which the torch backend cannot store; build with --backend ort")
        size = torch.Size(shape).numel() * torch.empty((), dtype=kind).element_size()
        header[key] = {"dtype": _ST_DTYPES[kind], "shape": list(shape), "data_offsets": [offset, offset + size]}
        stored[key] = kind
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for key in entries:
            tensor = weights.tensor(key).to(stored[key]).contiguous().cpu()
            f.write(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


"""TensorRT: one engine per exported graph, one optimization profile per bucket.

All buckets of the HiLo graph share one engine (one copy of the weights on the GPU); profile
i spans bucket i's ``k_kept`` range (min..max, opt at its typical size; padded sizing: exactly
its size), and the runner sets each call's own shape inside it. ``import tensorrt`` happens only inside this module's
functions that need it; without TensorRT the backend refuses at once and says what to install.
The pure parts (profile shapes, build settings) need no TensorRT and are tested; the cache key
is the build's (hilo_export.export.builder), shared by every backend.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

from ...files import atomic_path
from ...planning.buckets import K_AXIS
from ..dtypes import PRECISIONS
from . import TORCH_DTYPES, BackendError, Profile, numpy_io

INSTALL_HINT = (
    "TensorRT is not installed. Install it where an NVIDIA GPU and driver exist (for example "
    "pip install tensorrt-cu12, or run inside NVIDIA's TensorRT or Triton container), then rerun "
    "with --backend trt; or build with --backend ort, the default."
)


def _tensorrt():
    try:
        import tensorrt
    except ImportError as err:
        raise BackendError(INSTALL_HINT) from err
    return tensorrt


def hilo_plugins():
    """The hilo_trt package (plugins/tensorrt), installed with hilo-export. Importing it needs no
    TensorRT; its register() does."""
    try:
        import hilo_trt
    except ImportError:
        raise BackendError("the hilo TensorRT plugins (package hilo_trt, from plugins/tensorrt) are not installed: "
                           "install hilo-export from its repository (pip install -e .)") from None
    return hilo_trt


def plugin_digest() -> str:
    """sha256 of the plugin sources: a changed kernel must rebuild engines that embed it."""
    folder = Path(hilo_plugins().__file__).parent
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def profile_shapes(input_shapes: dict[str, list[int | str]], profile: Profile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shape of every input for ``profile``: ``k_kept`` over the bucket's range."""
    shapes = {}
    for name, dims in input_shapes.items():
        if any(isinstance(d, str) and d != K_AXIS for d in dims):
            raise BackendError(f"input {name} has a dynamic axis other than {K_AXIS}: {dims}; engines need static shapes")
        shapes[name] = tuple(tuple(k if d == K_AXIS else int(d) for d in dims) for k in profile.shape_range)
    return shapes


def build_settings(input_shapes: dict[str, list[int | str]], profiles: list[Profile], precision: str) -> dict[str, Any]:
    """Everything a build uses besides the ONNX file, as plain data (also the cache key's content)."""
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return {
        # the network takes its types from the ONNX file (exported in this precision)
        "strongly_typed": True,
        "precision": precision,
        "profiles": [
            {"bucket": p.bucket, "shapes": {k: [list(s) for s in v] for k, v in profile_shapes(input_shapes, p).items()}}
            for p in profiles
        ],
    }


class TrtBackend:
    name = "trt"
    portable = False  # an engine runs only with the TensorRT version and GPU it was built for

    def __init__(self, plugins: bool = False):
        self._trt = _tensorrt()  # fail at once, before any export work
        # with plugins, the hilo ops become TensorRT plugin layers (AOT Triton kernels inside
        # the engine); without, the ONNX parser inlines their standard-op function bodies
        self.plugins: tuple[str, ...] = ()
        self.plugin_key: str | None = None
        if plugins:
            package = hilo_plugins()
            try:
                self.plugins = package.register()
            except package.PluginUnavailable as err:
                raise BackendError(str(err)) from None
            self.plugin_key = plugin_digest()

    def version(self) -> str:
        return self._trt.__version__

    def check_precision(self, precision: str) -> None:
        pass  # the strongly typed network runs in the precision the ONNX file was exported in

    def device(self) -> str:
        import torch

        if not torch.cuda.is_available():
            raise BackendError("the trt backend needs an NVIDIA GPU that torch can see (torch.cuda.is_available() is False)")
        major, minor = torch.cuda.get_device_capability()
        return f"{torch.cuda.get_device_name()} sm_{major}{minor}"

    def build(self, onnx_path: Path, profiles: list[Profile], precision: str, out_dir: Path, key: str,
              source=None) -> list[Path]:
        trt = self._trt
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 0
        if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):  # TensorRT 10; 11 is always strongly typed
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        if self.plugins and hasattr(trt.NetworkDefinitionCreationFlag, "PREFER_AOT_PYTHON_PLUGINS"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT could not parse {onnx_path.name}: {errors}")
        plugin_layers = _plugin_layers(trt, network)
        if self.plugins and not plugin_layers:
            raise BackendError(
                f"TensorRT {trt.__version__}'s ONNX parser inlined the hilo function bodies instead of using the "
                "registered plugins (it prefers plugins from 10.7 on); upgrade TensorRT or build without --plugins"
            )
        if plugin_layers and not self.plugins:
            # registration is process-wide: an earlier --plugins build would leak into this engine
            raise BackendError("the hilo plugins are registered in this process (an earlier --plugins build), so TensorRT "
                               "used them; build without --plugins in a fresh process")
        input_shapes = {
            network.get_input(i).name: [K_AXIS if d == -1 else d for d in network.get_input(i).shape]
            for i in range(network.num_inputs)
        }
        settings = build_settings(input_shapes, profiles, precision)
        config = builder.create_builder_config()
        cache_path = out_dir / "timing.cache"
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        for entry in settings["profiles"]:  # profile i serves bucket i
            profile = builder.create_optimization_profile()
            for name, (low, opt, high) in entry["shapes"].items():
                profile.set_shape(name, low, opt, high)
            config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"TensorRT failed to build an engine from {onnx_path.name} (see its log above)")
        engine_path = out_dir / f"{onnx_path.stem}-{key[:16]}.plan"
        with atomic_path(engine_path) as tmp:
            tmp.write_bytes(bytes(serialized))
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        return [engine_path]

    def load(self, onnx_path: Path, engine_files: list[Path], profiles: list[Profile],
             read: Callable[[Path], bytes] | None = None) -> "TrtRunner":
        """``read``: how to get the engine's bytes (the runtime's checks their sha256 once read)."""
        return TrtRunner(self._trt, engine_files[0], profiles, read or Path.read_bytes)


def _plugin_layers(trt, network) -> int:
    kinds = {getattr(trt.LayerType, k) for k in ("PLUGIN_V3", "PLUGIN_V2") if hasattr(trt.LayerType, k)}
    return sum(network.get_layer(i).type in kinds for i in range(network.num_layers))


class TrtRunner:
    """Runs one engine; each bucket selects its optimization profile. One call at a time per runner.

    Feeds are read where they lie on the GPU (``set_tensor_address``), outputs are torch tensors
    made on the same device, and the engine is enqueued on torch's current stream with no
    synchronization: the caller's next kernels on that stream see the results, as with any
    torch op. Feeds on another device are moved once (``tensor.to``), never through numpy.
    """

    def __init__(self, trt, engine_path: Path, profiles: list[Profile], read: Callable[[Path], bytes] = Path.read_bytes):
        import threading

        import torch

        self._torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = runtime.deserialize_cuda_engine(read(engine_path))
        if self._engine is None:
            raise BackendError(f"TensorRT could not load {engine_path.name} (built for another GPU or TensorRT?); rebuild it")
        self._context = self._engine.create_execution_context()
        self._profile_index = {p.bucket: i for i, p in enumerate(profiles)}
        self._trt = trt
        self._lock = threading.Lock()  # an execution context is not reentrant
        self.device = torch.device("cuda", torch.cuda.current_device())
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self.output_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._input_names = [n for n in names if n not in self.output_names]
        self._dtypes = {n: torch_dtype(trt, self._engine.get_tensor_dtype(n)) for n in names}

    @numpy_io
    def run(self, bucket: str, feeds: dict[str, Any]) -> dict[str, Any]:
        torch = self._torch
        with self._lock:
            stream = torch.cuda.current_stream(self.device)
            # the profile must be chosen before input shapes are set
            self._context.set_optimization_profile_async(self._profile_index[bucket], stream.cuda_stream)
            # kept referenced until the call returns; the caching allocator orders their reuse on this stream
            inputs = {n: feeds[n].to(self.device, self._dtypes[n]).contiguous() for n in self._input_names}
            for name, tensor in inputs.items():
                self._context.set_input_shape(name, tuple(tensor.shape))
                self._context.set_tensor_address(name, tensor.data_ptr())
            outputs = {}
            for name in self.output_names:
                shape = tuple(self._context.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
                self._context.set_tensor_address(name, outputs[name].data_ptr())
            if not self._context.execute_async_v3(stream.cuda_stream):
                raise BackendError(f"TensorRT execution failed for bucket {bucket}")
            return outputs


def torch_dtype(trt, trt_dtype) -> Any:
    """The torch dtype of a TensorRT tensor type (by name: trt.nptype has no bfloat16)."""
    name = str(trt_dtype).rsplit(".", 1)[-1].upper()
    table = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
             "INT32": "int32", "INT64": "int64", "BOOL": "bool"}
    if name not in table:
        raise BackendError(f"the engine has a tensor of TensorRT type {name}, which hilo-export does not feed; rebuild it")
    return TORCH_DTYPES[table[name]]

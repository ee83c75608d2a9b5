"""torch -> ONNX for one HiLo engine graph, with the ``hilo`` ops as custom nodes.

An engine graph is ``model.engine.EngineModule`` traced: the full-grid model inputs plus
``keep_indices`` [B, K] (K is the one dynamic axis, ``k_kept``), ``fill`` [B, N, C_out] and, with
low-frequency tokens, ``use_fill`` bool [1]; it returns ``output`` [B, N, C_out] with every token
filled (dropped ones from ``fill`` or from their block's low-frequency prediction) and
``lowfreq_output`` [B, L, C_out]. The low-frequency pooling and block table are constants of
the graph (they depend only on the grid). A ``full`` graph keeps every token: K = N, static,
no low-frequency tokens.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import install_hint, require
from ..folder.dtypes import PRECISIONS
from ..model.engine import EngineModule
from ..model.ops import onnx_functions, onnx_translations
from ..model.weights import meta_copy
from ..planning.buckets import K_AXIS
from ..planning.plan import LowFreqLayout
from .attention import attention_chunks, chunked_attention_translation
from .errors import ExportError
from .external import MODEL_PREFIX, WeightsFile, attach
from .precision import compute_in_float32

ONNX_OPSET = 20
# max |onnx - torch| / max |torch| accepted after export, against float32 torch: fp32 matches
# to rounding; fp16 and bf16 cost their resolution, and eager torch in that precision misses
# by as much (Flux width, fp16: 1.7e-2 to 2.3e-2; tiny-flux, bf16: 4.9e-2 to 5.7e-2; README)
TOLERANCES = {"fp32": 1e-4, "fp16": 5e-2, "bf16": 1e-1}


@dataclass(frozen=True)
class GraphSpec:
    """Everything that shapes one exported graph."""

    kind: str  # "hilo" (dynamic K, low-frequency tokens) or "full"
    grid: tuple[int, int]
    batch: int
    text_len: int
    lowfreq_factor: int | None
    precision: str = "fp32"

    @property
    def n_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def layout(self) -> LowFreqLayout | None:
        if self.kind == "full" or self.lowfreq_factor is None:
            return None
        return LowFreqLayout(self.lowfreq_factor, self.grid)

    @property
    def n_lowfreq(self) -> int:
        return 0 if self.layout is None else self.layout.count

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "grid": list(self.grid)}


class EngineGraph(EngineModule):
    """The function an engine computes (model.engine.EngineModule) with the spec it is exported for."""

    def __init__(self, adapter, model: torch.nn.Module, spec: GraphSpec):
        super().__init__(adapter, model, spec.kind, spec.grid, spec.lowfreq_factor)
        self.spec = spec

    def example_feed(self, keep: torch.Tensor | None = None, use_fill: bool = False) -> dict[str, torch.Tensor]:
        spec = self.spec
        dtype = PRECISIONS[spec.precision]
        feed = self.adapter.example_inputs(self.model, spec.batch, spec.grid, spec.text_len, dtype)
        if keep is None:
            keep = torch.arange(spec.n_tokens) if spec.kind == "full" else example_keep(spec.n_tokens, spec.n_tokens // 3)
        feed["keep_indices"] = keep.expand(spec.batch, -1).contiguous()
        g = torch.Generator().manual_seed(1)
        channels = self.adapter.out_channels(self.model)
        feed["fill"] = torch.randn(spec.batch, spec.n_tokens, channels, generator=g, dtype=dtype)
        if "use_fill" in self.input_names:
            feed["use_fill"] = torch.tensor([use_fill])
        return feed


def example_keep(n_tokens: int, k: int, seed: int = 0) -> torch.Tensor:
    """k sorted distinct token indices, drawn reproducibly."""
    g = torch.Generator().manual_seed(seed)
    return torch.sort(torch.randperm(n_tokens, generator=g)[: max(1, k)]).values


@contextlib.contextmanager
def _quiet_exporter():
    """Silence what the exporter says on every trace that tells the user nothing: four "torchvision
    is not installed" lines (this package exports no torchvision op) and a FutureWarning about
    torch's own pytree internals."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*treespec.*LeafSpec", category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def export_graph(graph: EngineGraph, path: Path, weights: WeightsFile,
                 progress: Callable[[str], None] = lambda _: None) -> Path:
    """Export ``graph`` to ``path`` (written atomically) with its weights in the shared ``weights`` file.

    The model is traced on the meta device (``graph.model`` may be a meta model: only shapes and
    dtypes are needed), so exporting never holds the weights; they are read from ``weights``
    afterwards, only the few small ones the optimizer folds.
    """
    spec = graph.spec
    # the graph's own buffers (the pooling matrix) are real constants; trace them on meta too
    constants = {name: buffer for name, buffer in graph.named_buffers() if not name.startswith(MODEL_PREFIX)}
    tracer = _on_meta(graph)
    feed = {name: value.to("meta") for name, value in graph.example_feed().items()}
    dynamic = {name: {} for name in graph.input_names}
    if spec.kind != "full":
        dynamic["keep_indices"] = {1: torch.export.Dim(K_AXIS, min=1, max=spec.n_tokens)}
    # the longest sequence the graph sees: text, then every image token (+ low-frequency ones in hilo)
    max_len = spec.text_len + spec.n_tokens + (spec.n_lowfreq if spec.kind != "full" else 0)
    chunks = attention_chunks(spec.batch, graph.adapter.attention_heads(graph.model), max_len)
    progress(f"tracing {spec.kind} graph ({spec.grid[0]}x{spec.grid[1]} tokens, {spec.precision}, on the meta device"
             + (f", attention in {chunks} query slices)" if chunks > 1 else ")"))
    with graph.adapter.export_mode(tracer.model), torch.no_grad(), _quiet_exporter():
        try:
            program = torch.onnx.export(
                tracer,
                tuple(feed.values()),
                dynamo=True,
                optimize=False,  # the optimizer needs real tensors: run it once the weights are attached
                dynamic_shapes={"tensors": tuple(dynamic.values())},
                custom_translation_table={**onnx_translations(), **chunked_attention_translation(chunks)},
                input_names=graph.input_names,
                output_names=graph.output_names,
                opset_version=ONNX_OPSET,
                verbose=False,
            )
        except Exception as err:  # noqa: BLE001 - exporter errors are long; keep their first line
            raise ExportError(f"torch.onnx.export failed for the {spec.kind} graph: {str(err).splitlines()[0]}") from err
    attach(program.model, weights, constants, path.parent)
    progress(f"optimizing {spec.kind} graph")
    optimize(program.model)
    if spec.precision != "fp32":
        upcast = compute_in_float32(program.model)
        progress(f"{spec.kind} graph: {upcast} LayerNormalization/Softmax nodes compute in float32")
    float64 = [v.name for v in _all_values(program.model) if v.dtype is not None and v.dtype.name == "DOUBLE"]
    if float64:
        raise ExportError(f"the {spec.kind} graph computes in float64 ({float64[:3]}); engines must not (TensorRT has no float64)")
    import onnx_ir as ir

    proto = ir.serde.serialize_model(program.model)
    proto.functions.extend(onnx_functions(ONNX_OPSET))
    proto.doc_string = f"hilo-export {spec.kind} engine graph: {spec.to_json()}"
    progress(f"writing {path.name}")
    return _save(proto, path)


def optimize(model) -> None:
    """The exporter's optimizer, except that nothing computed from a weight is folded.

    By default it would fold whatever computes from a weight into a new constant: a copy of
    that weight inside the graph file, in memory while it is written. Weights stay in the
    shared file, read by reference (``attach`` already stored the linear weights in the layout
    their ``MatMul`` reads, so no ``Transpose`` of a weight is left to fold).
    """
    import onnx_ir as ir
    from onnxscript.optimizer import optimize_ir

    def reads_a_weight(node) -> bool | None:
        return False if any(v is not None and isinstance(v.const_value, ir.ExternalTensor) for v in node.inputs) else None

    optimize_ir(model, should_fold=reads_a_weight)


def _on_meta(graph: EngineGraph) -> EngineGraph:
    """The same graph with its model and buffers on the meta device (no storage, same shapes)."""
    model = graph.model if graph.model.device.type == "meta" else meta_copy(graph.model).to(graph.model.dtype)
    tracer = EngineGraph(graph.adapter, model, graph.spec)
    if tracer.pool is not None:
        tracer.pool = tracer.pool.to("meta")
        tracer.block = tracer.block.to("meta")
    return tracer.eval()


def _all_values(model):
    for node in model.graph.all_nodes():
        yield from (v for v in node.outputs)
    yield from model.graph.inputs
    yield from model.graph.initializers.values()


def _save(proto, path: Path) -> Path:
    import onnx

    from ..files import atomic_path

    # the weights are external, so the file itself is small; checked by path, so the checker
    # also sees that every external reference stays inside the folder
    with atomic_path(path) as staged:
        onnx.save_model(proto, staged)
        try:
            onnx.checker.check_model(str(staged), full_check=True)
        except onnx.checker.ValidationError as err:
            raise ExportError(f"the exported graph fails onnx.checker: {str(err).splitlines()[0]}") from None
    return path


def check_against_torch(graph: EngineGraph, path: Path, ks: list[int],
                        progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run the file at several K and compare with the eager graph in float32 (stock RoPE).

    ``graph`` holds the real float32 model; the file runs on the same inputs in its own
    precision, so the error measured is what the precision costs. fp32 and fp16 run on ONNX
    Runtime; bf16 (which ORT's CPU kernels lack) on ONNX's reference evaluator. Returns the
    tolerance and relative error per K; raises ExportError above the tolerance.
    """
    spec = graph.spec
    tolerance = TOLERANCES[spec.precision]
    run = _reference_runner(path) if spec.precision == "bf16" else _ort_runner(path, spec)
    errors = {}
    for i, k in enumerate(ks):
        keep = torch.arange(spec.n_tokens) if spec.kind == "full" else example_keep(spec.n_tokens, k, seed=k)
        feed = graph.example_feed(keep, use_fill=bool(i % 2))  # both fills of the dropped tokens
        with torch.no_grad():
            expected = graph(*(v.float() if v.is_floating_point() else v for v in feed.values()))
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = run(feed)
        errors[str(len(keep))] = max(relative_error(g, e.float().numpy()) for g, e in zip(got, expected))
        progress(f"  K = {len(keep)}: relative error {errors[str(len(keep))]:.1e}")  # each K can take a minute at Flux width
    worst = max(errors.values())
    if not worst <= tolerance:
        raise ExportError(f"the {spec.precision} graph differs from float32 torch by {worst:.2e} "
                          f"(relative, per K: {errors}); tolerance {tolerance}")
    return {"tolerance": tolerance, "reference": "torch float32", "runner": run.__doc__, "relative_error": errors}


def _ort_runner(path: Path, spec: GraphSpec):
    ort = require("onnxruntime", ExportError, f"checking the exported graph needs ONNX Runtime: {install_hint('ort')}")

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
        raise ExportError(f"ONNX Runtime cannot load the exported {spec.kind} graph: {str(err).splitlines()[0]}") from err

    def run(feed: dict[str, torch.Tensor]) -> list[np.ndarray]:
        """onnxruntime CPU"""
        return session.run(None, {name: value.numpy() for name, value in feed.items()})

    return run


def _reference_runner(path: Path):
    from onnx.reference import ReferenceEvaluator

    from ..folder.dtypes import to_numpy

    evaluator = ReferenceEvaluator(str(path))

    def run(feed: dict[str, torch.Tensor]) -> list[np.ndarray]:
        """onnx.reference"""
        return evaluator.run(None, {name: to_numpy(value) for name, value in feed.items()})

    return run


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| / max |expected|."""
    scale = float(np.abs(expected).max()) or 1.0
    return float(np.abs(got.astype(np.float32) - expected).max()) / scale

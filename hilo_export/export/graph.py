"""torch -> ONNX for one HiLo engine graph, with the ``hilo`` ops as custom nodes.

An engine graph takes the full-grid model inputs plus ``keep_indices`` [B, K] (K is the one
dynamic axis, ``k_kept``) and ``fill`` [B, N, C_out], and returns ``output`` [B, N, C_out]:
the kept tokens' predictions scattered into ``fill``. A graph with low-frequency tokens also
returns ``lowfreq_output`` [B, L, C_out], so a caller can fill dropped tokens from their
block's prediction. The low-frequency pooling is a constant of the graph (it depends only on
the grid). A ``full`` graph keeps every token: K = N, static, no low-frequency tokens.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..model.ops import onnx_functions, onnx_translations, token_scatter
from ..model.sequence import PlanTensors
from ..planning.buckets import K_AXIS
from ..planning.plan import LowFreqLayout

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ONNX_OPSET = 20
# protobuf cannot serialize a message over 2 GiB: larger models keep weights in a side file
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**20
# max |onnx - torch| / max |torch| accepted after export: fp32 matches to rounding, lower
# precisions to their resolution
TOLERANCES = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 5e-2}


class ExportError(RuntimeError):
    """Export failed or the exported file does not match torch."""


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


class EngineGraph(torch.nn.Module):
    """The function an engine computes, as a module torch.onnx.export can trace."""

    def __init__(self, adapter, model: torch.nn.Module, spec: GraphSpec):
        super().__init__()
        self.adapter = adapter
        self.model = model
        self.spec = spec
        layout = spec.layout
        self.register_buffer("pool", None if layout is None else layout.pooling_matrix(), persistent=False)
        self.input_names = [*adapter.input_names(model), "keep_indices", "fill"]
        self.output_names = ["output", "lowfreq_output"] if layout is not None else ["output"]

    def forward(self, *tensors: torch.Tensor):
        inputs = dict(zip(self.input_names, tensors))
        keep, fill = inputs.pop("keep_indices"), inputs.pop("fill")
        plan = PlanTensors(keep, self.pool, None)
        predictions = self.adapter.predict(self.model, plan, self.spec.n_tokens, inputs)
        n_lowfreq = self.spec.n_lowfreq
        output = token_scatter(fill, keep, predictions[:, n_lowfreq:])
        return (output, predictions[:, :n_lowfreq]) if n_lowfreq else output

    def example_feed(self, keep: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        spec = self.spec
        dtype = PRECISIONS[spec.precision]
        feed = self.adapter.example_inputs(self.model, spec.batch, spec.grid, spec.text_len, dtype)
        if keep is None:
            keep = torch.arange(spec.n_tokens) if spec.kind == "full" else example_keep(spec.n_tokens, spec.n_tokens // 3)
        feed["keep_indices"] = keep.expand(spec.batch, -1).contiguous()
        g = torch.Generator().manual_seed(1)
        channels = self.adapter.out_channels(self.model)
        feed["fill"] = torch.randn(spec.batch, spec.n_tokens, channels, generator=g, dtype=dtype)
        return feed


def example_keep(n_tokens: int, k: int, seed: int = 0) -> torch.Tensor:
    """k sorted distinct token indices, drawn reproducibly."""
    g = torch.Generator().manual_seed(seed)
    return torch.sort(torch.randperm(n_tokens, generator=g)[: max(1, k)]).values


def export_graph(graph: EngineGraph, path: Path, progress: Callable[[str], None] = lambda _: None) -> Path:
    """Export ``graph`` to ``path`` (written atomically, weights beside it when over 2 GiB)."""

    spec = graph.spec
    feed = graph.example_feed()
    dynamic = {name: {} for name in graph.input_names}
    if spec.kind != "full":
        dynamic["keep_indices"] = {1: torch.export.Dim(K_AXIS, min=1, max=spec.n_tokens)}
    progress(f"tracing {spec.kind} graph ({spec.grid[0]}x{spec.grid[1]} tokens)")
    with graph.adapter.export_mode(graph.model), torch.no_grad():
        try:
            program = torch.onnx.export(
                graph,
                tuple(feed.values()),
                dynamo=True,
                dynamic_shapes={"tensors": tuple(dynamic.values())},
                custom_translation_table=onnx_translations(),
                input_names=graph.input_names,
                output_names=graph.output_names,
                opset_version=ONNX_OPSET,
                verbose=False,
            )
        except Exception as err:  # noqa: BLE001 - exporter errors are long; keep their first line
            raise ExportError(f"torch.onnx.export failed for the {spec.kind} graph: {str(err).splitlines()[0]}") from err
    proto = program.model_proto
    proto.functions.extend(onnx_functions(ONNX_OPSET))
    proto.doc_string = f"hilo-export {spec.kind} engine graph: {spec.to_json()}"
    progress(f"writing {path.name}")
    return _save(proto, path)


def _save(proto, path: Path) -> Path:
    import shutil
    import tempfile

    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    data_name = f"{path.name}.data"
    # write both files in a private folder beside the target, then move them into place:
    # onnx appends to an existing data file, and readers must never see half a file
    staging = Path(tempfile.mkdtemp(prefix=f".{path.stem}-", suffix=".partial", dir=path.parent))
    try:
        staged = staging / path.name
        if proto.ByteSize() > EXTERNAL_DATA_THRESHOLD:
            onnx.save_model(proto, staged, save_as_external_data=True, all_tensors_to_one_file=True, location=data_name)
            onnx.checker.check_model(str(staged), full_check=True)
            os.replace(staging / data_name, path.with_name(data_name))
        else:
            onnx.checker.check_model(proto, full_check=True)
            onnx.save_model(proto, staged)
        os.replace(staged, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def data_files(path: Path) -> list[Path]:
    """The ONNX file and its external-data file, if any."""
    side = path.with_name(f"{path.name}.data")
    return [path, side] if side.exists() else [path]


def check_against_torch(graph: EngineGraph, path: Path, ks: list[int]) -> dict[str, Any]:
    """Run the file with ONNX Runtime at several K and compare with the eager graph (stock RoPE).

    Returns the tolerance and relative error per K; raises ExportError above the tolerance.
    ONNX Runtime on the CPU has no bf16 kernels (and numpy no bf16 type), so a graph that it
    cannot run is reported as not checked rather than failed: validate it on its device.
    """
    import onnxruntime as ort

    spec = graph.spec
    tolerance = TOLERANCES[spec.precision]
    if spec.precision == "bf16":
        return {"tolerance": tolerance, "skipped": "ONNX Runtime on the CPU cannot run bf16; run hilo-export validate on the device"}
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        errors = {}
        for k in ks:
            keep = torch.arange(spec.n_tokens) if spec.kind == "full" else example_keep(spec.n_tokens, k, seed=k)
            feed = graph.example_feed(keep)
            with torch.no_grad():
                expected = graph(*feed.values())
            expected = expected if isinstance(expected, tuple) else (expected,)
            got = session.run(None, {name: value.numpy() for name, value in feed.items()})
            errors[str(len(keep))] = max(relative_error(g, e.float().numpy()) for g, e in zip(got, expected))
    except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
        if spec.precision == "fp32":
            raise ExportError(f"ONNX Runtime cannot run the exported {spec.kind} graph: {err}") from err
        return {"tolerance": tolerance, "skipped": f"ONNX Runtime on the CPU cannot run this {spec.precision} graph ({err})"}
    worst = max(errors.values())
    if not worst <= tolerance:
        raise ExportError(f"ONNX Runtime differs from torch by {worst:.2e} (relative, per K: {errors}); tolerance {tolerance}")
    return {"tolerance": tolerance, "relative_error": errors}


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| / max |expected|."""
    scale = float(np.abs(expected).max()) or 1.0
    return float(np.abs(got.astype(np.float32) - expected).max()) / scale

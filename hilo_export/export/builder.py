"""``hilo-export build``: export, build engines per bucket, write ``manifest.json``; cached.

A folder holds at most two graphs: ``hilo`` (dynamic ``k_kept``, every bucket but full) and
``full``. Files are named by the hash of what defines them, written beside the old ones, and
the manifest is replaced last: an interrupted build leaves the previous build usable, and a
repeated build finds every file already there and rebuilds nothing.
"""

from __future__ import annotations

import logging
import platform
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__
from ..files import atomic_path
from ..folder.backends import Profile, get_backend
from ..folder.manifest import (
    DIGEST,
    SCHEMA_VERSION,
    file_entry,
    files_intact,
    json_sha256,
    value_info,
    write_manifest,
)
from ..model.adapters import adapter_for
from ..model.loading import ExportModel, load_for_export, text_len_for, token_size_for
from ..planning.buckets import FULL, K_AXIS, Bucket, format_buckets, kept_range, parse_buckets
from ..planning.plan import LowFreqLayout
from .cache import code_digest, engine_key, graph_key, plain
from .external import linear_weights, plan_weights, write_weights
from .graph import (
    PRECISIONS,
    TOLERANCES,
    EngineGraph,
    GraphSpec,
    check_against_torch,
    export_graph,
)
from .request import MAX_TOKENS, BuildError, BuildRequest, check_step_memory, default_out_dir
from .workspace import locked, previous_manifest, remove_leftovers, remove_unreferenced

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSource:
    """What a backend that serves the model itself (torch) builds its engine files from."""

    class_name: str
    config: dict[str, Any]
    spec: dict[str, Any]  # the graph's GraphSpec
    weights: Any  # model.weights.WeightSource
    weights_key: str
    dtype: torch.dtype


def build(request: BuildRequest, progress: Callable[[str], None] = log.info) -> Path:
    """Build (or bring up to date) the engine folder ``request`` describes; its fields were checked
    when it was made (``BuildRequest.__post_init__``)."""
    from ..model.engine import engine_module

    # refuses at once when missing
    backend = get_backend(request.backend, plugins=request.plugins, engine_module=engine_module)
    if request.token_size is None:
        request = replace(request, token_size=token_size_for(request.model))
    backend.check_precision(request.precision)  # refuses only what the backend cannot build at all
    width, height = request.resolution
    if width % request.token_size or height % request.token_size:
        raise BuildError(
            f"resolution {width}x{height} must be positive multiples of the token size {request.token_size} "
            f"({token_size_for(request.model)} px for {request.model})"
        )
    if (width // request.token_size) * (height // request.token_size) > MAX_TOKENS:
        raise BuildError(
            f"resolution {width}x{height} with {request.token_size}-px tokens is "
            f"{(width // request.token_size) * (height // request.token_size)} tokens; engines hold at most {MAX_TOKENS}: "
            "choose a smaller --resolution"
        )
    table = parse_buckets(request.buckets)

    progress(f"loading {request.model} (shapes on the meta device; weights are streamed)")
    source = load_for_export(request.model)
    loaded = source.loaded
    adapter = adapter_for(source.meta)  # ModelError names the supported families
    grid = (height // request.token_size, width // request.token_size)
    layout = None if request.config.lowfreq_factor is None else LowFreqLayout(request.config.lowfreq_factor, grid)
    text_len = request.text_len if request.text_len is not None else text_len_for(request.model)
    # before anything is exported: sizes no machine (or not this one, which runs small models) can hold
    check_step_memory(dict(source.meta.config), request.batch, grid[0] * grid[1], text_len, source.eager is not None)
    out_dir = Path(request.out_dir or default_out_dir(loaded.slug, request.resolution))
    with locked(out_dir):
        return _build_locked(request, backend, source, adapter, table, grid, layout, text_len, out_dir, progress)


def _build_locked(request, backend, source: ExportModel, adapter, table, grid, layout, text_len, out_dir: Path,
                  progress) -> Path:
    loaded = source.loaded
    width, height = request.resolution
    n_tokens = grid[0] * grid[1]
    n_lowfreq = layout.count if layout else 0
    remove_leftovers(out_dir)
    previous = previous_manifest(out_dir)
    device = backend.device()
    if request.precision != "fp32" and device == "cpu":
        progress(f"note: {request.precision} graphs are meant for a GPU; ONNX Runtime on this CPU runs fp16 slowly "
                 "and bf16 not at all (build fp32 to serve from a CPU)")
    weights = _weights(source, request.precision, out_dir, previous, progress)

    groups = {"hilo": [b for b in table if not b.is_full], FULL: [b for b in table if b.is_full]}
    graphs: dict[str, Any] = {}
    for kind, buckets in groups.items():
        if not buckets:
            continue
        spec = GraphSpec(kind, grid, request.batch, text_len, request.config.lowfreq_factor, request.precision)
        profiles = []
        for b in buckets:
            r = kept_range(table, table.index(b), n_tokens, 0 if b.is_full else n_lowfreq, request.config.sizing)
            profiles.append(Profile(b.name, r["max"], r["min"], r["opt"]))
        graphs[kind] = _graph(source, adapter, weights, spec, profiles, backend, device, out_dir, previous, progress)

    planner = _planner_model(request, table, out_dir, previous, progress)

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "hilo_export_version": __version__,
        "model": {
            "name": loaded.name,
            "source": loaded.source,
            "family": adapter.family,
            "class": type(source.meta).__name__,
            "weights_sha256": loaded.weights_sha256,
            "config": plain(dict(loaded.model.config)),
        },
        "resolution": [width, height],
        "token_size": request.token_size,
        "grid": list(grid),
        "batch": request.batch,
        "text_len": text_len,
        "precision": request.precision,
        "planner": request.config.to_dict(),
        "buckets_spec": format_buckets(table),
        "backend": _backend_entry(backend, device),
        "weights": weights,
        "graphs": graphs,
        "buckets": [_bucket_entry(table, i, n_tokens, n_lowfreq, request.config.sizing, graphs) for i in range(len(table))],
        "planner_model": planner,
        "tools": _tool_versions(),
    }
    if previous is not None and {k: v for k, v in previous.items() if k != DIGEST} == manifest:
        progress(f"{out_dir} is up to date")
    else:
        write_manifest(out_dir, manifest)
    remove_unreferenced(out_dir, manifest)
    progress(f"built {out_dir} ({', '.join(b.name for b in table)})")
    return out_dir


def _weights(source: ExportModel, precision: str, out_dir: Path, previous: dict[str, Any] | None,
             progress) -> dict[str, Any]:
    """The one external-data file every graph of the build reads its weights from."""
    key = json_sha256({
        "weights": source.loaded.weights_sha256,
        "precision": precision,
        "code": code_digest(["hilo_export.export.external"]),  # the file's layout
    })
    path = out_dir / f"weights-{key[:16]}.data"
    old = (previous or {}).get("weights")
    if old and old["key"] == key and files_intact(out_dir, old["files"]):
        progress(f"weights: up to date ({path.name})")
        return old
    planned = plan_weights(source.weights, PRECISIONS[precision], path, linear_weights(source.meta))
    sha256 = write_weights(source.weights, planned, progress)
    return {"key": key, "files": [{"path": path.name, "sha256": sha256, "bytes": path.stat().st_size}]}


def _graph(source: ExportModel, adapter, weights: dict[str, Any], spec: GraphSpec, profiles: list[Profile], backend,
           device: str, out_dir: Path, previous: dict[str, Any] | None, progress) -> dict[str, Any]:
    loaded = source.loaded
    key = graph_key(loaded, spec, weights["key"])
    old = (previous or {}).get("graphs", {}).get(spec.kind)
    onnx_path = out_dir / f"{spec.kind}-{key[:16]}.onnx"
    # the weights file was verified (or written) just before, and the key covers it: check the graph's own file
    if old and old["key"] == key and files_intact(out_dir, old["files"][:1]):
        progress(f"{spec.kind} graph: up to date ({onnx_path.name})")
        files, check = old["files"], old["check"]
    else:
        dtype = PRECISIONS[spec.precision]
        _unshare(out_dir / weights["files"][0]["path"], progress)
        layout = plan_weights(source.weights, dtype, out_dir / weights["files"][0]["path"], linear_weights(source.meta))
        # torch.nn.Module.to: diffusers' own .to() warns about fp32 modules, which a meta model does not have
        meta = torch.nn.Module.to(source.meta, dtype)
        export_graph(EngineGraph(adapter, meta, spec).eval(), onnx_path, layout, progress)
        check = _check(source, adapter, spec, onnx_path, profiles, progress)
        check["tensorrt"] = _trt_check(onnx_path, backend.name, progress)
        files = [file_entry(onnx_path), *weights["files"]]

    onnx_sha = files[0]["sha256"]
    key_of_engine = engine_key(onnx_sha, profiles, spec.precision, backend.name, backend.version(), device,
                             getattr(backend, "plugin_key", None))
    old_engine = old["engine"] if old else None
    if old_engine and old_engine["key"] == key_of_engine and files_intact(out_dir, old_engine["files"]):
        engine_files = old_engine["files"]
        if engine_files:
            progress(f"{spec.kind} engine: up to date")
    else:
        engine_source = EngineSource(type(source.meta).__name__, plain(dict(loaded.model.config)), spec.to_json(),
                                     source.weights, weights["key"], PRECISIONS[spec.precision])
        built = backend.build(onnx_path, profiles, spec.precision, out_dir, key_of_engine, source=engine_source)
        if built:
            progress(f"{spec.kind} engine: built {', '.join(p.name for p in built)}")
        engine_files = [file_entry(p) for p in built]

    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    return {
        "key": key,
        "spec": spec.to_json(),
        "files": files,
        "check": check,
        "engine": {"key": key_of_engine, "files": engine_files, "profiles": [p.bucket for p in profiles]},
        "inputs": [value_info(v) for v in proto.graph.input],
        "outputs": [value_info(v) for v in proto.graph.output],
    }


def _unshare(path: Path, progress) -> None:
    """Give the weights file an inode of its own when other hard links share it.

    A Triton repository made from this folder hard-links its files, and onnx and onnx_ir refuse
    to read external data with several links (their guard against hard-link attacks), so the
    graph could never be exported again. The repository keeps the old inode: the same bytes.
    """
    if path.stat().st_nlink <= 1:
        return
    progress(f"{path.name} is also linked elsewhere (a Triton repository?): copying it so the exporter may read it")
    with atomic_path(path) as copy:
        shutil.copyfile(path, copy)


def _check(source: ExportModel, adapter, spec: GraphSpec, onnx_path: Path, profiles: list[Profile],
           progress) -> dict[str, Any]:
    """The exported graph against eager float32 torch, when the model is small enough to run here."""
    if source.eager is None:
        check = {"tolerance": TOLERANCES[spec.precision],
                 "skipped": "the model is too large to run eagerly on the build machine; run hilo-export validate on the device"}
    else:
        ks = sorted({p.kept for p in profiles} | {1}) if spec.kind != FULL else [spec.n_tokens]
        progress(f"{spec.kind} graph: checking the ONNX file against torch at K = {ks}")
        check = check_against_torch(EngineGraph(adapter, source.eager(), spec).eval(), onnx_path, ks, progress)
    if "skipped" in check:
        progress(f"{spec.kind} graph: not checked here: {check['skipped']}")
    return check


def _trt_check(onnx_path: Path, backend: str, progress) -> dict[str, Any]:
    """TensorRT's published ONNX support, checked statically: an error for a trt build, a warning otherwise."""
    from .trt_check import TENSORRT_VERSION, check_graph

    rejections = [str(r) for r in check_graph(onnx_path)]
    if rejections and backend == "trt":
        raise BuildError(f"TensorRT {TENSORRT_VERSION} would reject {len(rejections)} node(s): " + "; ".join(rejections[:5]))
    for rejection in rejections:
        progress(f"warning: TensorRT {TENSORRT_VERSION} would reject {rejection}")
    if not rejections:
        progress(f"{onnx_path.name}: every node is in TensorRT {TENSORRT_VERSION}'s ONNX operator support")
    return {"version": TENSORRT_VERSION, "rejected": rejections}


def _planner_model(request: BuildRequest, table: tuple[Bucket, ...], out_dir: Path, previous: dict[str, Any] | None,
                   progress) -> dict[str, Any]:
    """The planner as ONNX (planning/onnx_planner.py), for servers without the Python planner."""
    import onnx

    from ..planning.onnx_planner import PLANNER_OPSET, write_planner

    spec = format_buckets(table)
    key = json_sha256({
        "resolution": list(request.resolution),
        "token_size": request.token_size,
        "planner": request.config.to_dict(),
        "buckets": spec,
        "onnx": onnx.__version__,
        "opset": PLANNER_OPSET,
        "hilo_export": __version__,
        "code": code_digest(["hilo_export.planning"]),
    })
    old = (previous or {}).get("planner_model")
    path = out_dir / f"planner-{key[:16]}.onnx"
    if old and old["key"] == key and files_intact(out_dir, old["files"]):
        progress(f"planner: up to date ({path.name})")
        return old
    write_planner(path, request.resolution, request.token_size, spec, request.config)
    progress(f"planner: wrote {path.name}")
    proto = onnx.load(str(path))
    return {
        "key": key,
        "files": [file_entry(path)],
        "inputs": [value_info(v) for v in proto.graph.input],
        "outputs": [value_info(v) for v in proto.graph.output],
    }


def _bucket_entry(table: tuple[Bucket, ...], index: int, n_tokens: int, n_lowfreq: int, sizing: str,
                  graphs: dict[str, Any]) -> dict[str, Any]:
    bucket = table[index]
    kind = FULL if bucket.is_full else "hilo"
    lowfreq = 0 if bucket.is_full else n_lowfreq
    kept = bucket.kept(n_tokens, lowfreq)
    profile = kept_range(table, index, n_tokens, lowfreq, sizing)
    graph = graphs[kind]

    def resolved(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # shapes at the bucket's largest plan; exact sizing runs k_kept anywhere in [kept_min, kept]
        return [{**v, "shape": [kept if d == K_AXIS else d for d in v["shape"]]} for v in values]

    return {
        "name": bucket.name,
        "fraction": bucket.fraction,
        "capacity": bucket.capacity(n_tokens, lowfreq),
        "n_lowfreq": lowfreq,
        "kept": kept,
        "kept_min": profile["min"],
        "graph": kind,
        "profile": profile,
        "files": graph["files"] + graph["engine"]["files"],
        "inputs": resolved(graph["inputs"]),
        "outputs": resolved(graph["outputs"]),
    }


def _backend_entry(backend, device: str) -> dict[str, Any]:
    entry = {"name": backend.name, "version": backend.version(), "device": device}
    if getattr(backend, "plugins", ()):
        entry["plugins"] = list(backend.plugins)  # engines embed these plugin kernels
    return entry


def _tool_versions() -> dict[str, str]:
    import importlib.metadata as metadata

    versions = {"python": platform.python_version()}
    for package in ("torch", "diffusers", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "tensorrt", "polygraphy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


"""``hilo-export build``: export, build engines per bucket, write ``manifest.json``; cached.

A folder holds at most two graphs: ``hilo`` (dynamic ``k_kept``, every bucket but full) and
``full``. Files are named by the hash of what defines them, written beside the old ones, and
the manifest is replaced last: an interrupted build leaves the previous build usable, and a
repeated build finds every file already there and rebuilds nothing.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import logging
import platform
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .. import __version__
from ..errors import HiLoError
from ..files import atomic_path
from ..folder.backends import Profile, get_backend
from ..folder.manifest import (
    DIGEST,
    SCHEMA_VERSION,
    ManifestError,
    all_files,
    file_entry,
    files_intact,
    json_sha256,
    read_manifest,
    value_info,
    write_manifest,
)
from ..model.adapters import adapter_for
from ..model.loading import DEFAULT_MODEL, ExportModel, LoadedModel, load_for_export, text_len_for, token_size_for
from ..planning.buckets import FULL, K_AXIS, Bucket, format_buckets, kept_range, parse_buckets
from ..planning.plan import LowFreqLayout, PlannerConfig
from .external import linear_weights, plan_weights, write_weights
from .graph import (
    ONNX_OPSET,
    PRECISIONS,
    TOLERANCES,
    EngineGraph,
    GraphSpec,
    check_against_torch,
    export_graph,
)

log = logging.getLogger(__name__)

# the files a build owns in its folder: anything else there is left alone. Dot-files are what
# interrupted writes left (staging folders, atomic_path temporaries); the lock makes them stale.
_OWNED = re.compile(
    r"^(hilo|full|planner|weights)-[0-9a-f]{16}.*\.(onnx|onnx\.data|data|plan|torch\.json|torch\.safetensors)$"
    r"|^\.(hilo|full|planner|weights)-.*(\.partial|\.onnx|\.data)$"
    r"|^\.((hilo|full|planner|weights)-[0-9a-f]{16}[^/]*|manifest\.json)\.[^/]+$"
)
LOCK = ".hilo-build.lock"  # held while a build writes the folder; never removed (see filelock's docs)


_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


class BuildError(HiLoError, ValueError):
    """A build request that cannot be carried out; the message says how to fix it."""


@dataclass
class BuildRequest:
    model: str = DEFAULT_MODEL
    buckets: str = "s,m,l"
    resolution: tuple[int, int] = (1024, 1024)  # width, height in pixels
    backend: str = "ort"
    precision: str = "fp32"
    out_dir: Path | None = None
    token_size: int | None = None  # default: the model's (16 for Flux, 8 for the reference model)
    batch: int = 1
    text_len: int | None = None  # default: the model's (512 for Flux)
    plugins: bool = False  # TensorRT only: the hilo ops as plugins (plugins/tensorrt), not inlined bodies
    config: PlannerConfig = field(default_factory=PlannerConfig)


# Sizes past these fail deep inside torch or numpy with an allocation error; refuse them first.
MAX_SIDE = 8192  # pixels per side (Flux itself is trained up to about 2 megapixels)
MAX_TOKENS = 65536  # tokens per image: 4096 x 4096 px of 16-px tokens, 2048 x 2048 of 8-px ones


def parse_resolution(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise BuildError(f"resolution {text!r} is not WIDTHxHEIGHT, e.g. 1024x1024")
    width, height = int(match.group(1)), int(match.group(2))
    check_side(width, height)
    return width, height


def check_side(width: int, height: int) -> None:
    if width <= 0 or height <= 0 or max(width, height) > MAX_SIDE:
        raise BuildError(f"resolution {width}x{height}: each side must be 1 to {MAX_SIDE} pixels")


def default_out_dir(slug: str, resolution: tuple[int, int], root: Path = Path("engines")) -> Path:
    """``engines/<model>-<W>x<H>``: where build, edit and bench put (and find) a model's engines for one
    size, so builds for several sizes live side by side and every command reuses the others' builds."""
    return Path(root) / f"{slug}-{resolution[0]}x{resolution[1]}"


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
    from ..model.engine import engine_module

    # refuses at once when missing
    backend = get_backend(request.backend, plugins=request.plugins, engine_module=engine_module)
    if request.token_size is None:
        request = replace(request, token_size=token_size_for(request.model))
    if request.precision not in PRECISIONS:
        raise BuildError(f"unknown precision {request.precision!r}: use one of {', '.join(PRECISIONS)}")
    backend.check_precision(request.precision)  # refuses only what the backend cannot build at all
    if request.token_size < 1:
        raise BuildError(f"token size must be a positive number of pixels, got {request.token_size}")
    if request.text_len is not None and request.text_len < 1:
        raise BuildError(f"text length must be at least 1 token, got {request.text_len}")
    width, height = request.resolution
    if width <= 0 or height <= 0 or width % request.token_size or height % request.token_size:
        raise BuildError(
            f"resolution {width}x{height} must be positive multiples of the token size {request.token_size} "
            f"({token_size_for(request.model)} px for {request.model})"
        )
    check_side(width, height)
    if (width // request.token_size) * (height // request.token_size) > MAX_TOKENS:
        raise BuildError(
            f"resolution {width}x{height} with {request.token_size}-px tokens is "
            f"{(width // request.token_size) * (height // request.token_size)} tokens; engines hold at most {MAX_TOKENS}: "
            "choose a smaller --resolution"
        )
    if request.batch < 1:
        raise BuildError(f"batch must be at least 1, got {request.batch}")
    table = parse_buckets(request.buckets)

    progress(f"loading {request.model} (shapes on the meta device; weights are streamed)")
    source = load_for_export(request.model)
    loaded = source.loaded
    adapter = adapter_for(source.meta)  # ModelError names the supported families
    grid = (height // request.token_size, width // request.token_size)
    layout = None if request.config.lowfreq_factor is None else LowFreqLayout(request.config.lowfreq_factor, grid)
    text_len = request.text_len if request.text_len is not None else text_len_for(request.model)
    out_dir = Path(request.out_dir or default_out_dir(loaded.slug, request.resolution))
    with _locked(out_dir):
        return _build_locked(request, backend, source, adapter, table, grid, layout, text_len, out_dir, progress)


def _build_locked(request, backend, source: ExportModel, adapter, table, grid, layout, text_len, out_dir: Path,
                  progress) -> Path:
    loaded = source.loaded
    width, height = request.resolution
    n_tokens = grid[0] * grid[1]
    n_lowfreq = layout.count if layout else 0
    _remove_leftovers(out_dir)
    previous = _previous_manifest(out_dir)
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
            "config": _plain(dict(loaded.model.config)),
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
    _remove_unreferenced(out_dir, manifest)
    progress(f"built {out_dir} ({', '.join(b.name for b in table)})")
    return out_dir


def _weights(source: ExportModel, precision: str, out_dir: Path, previous: dict[str, Any] | None,
             progress) -> dict[str, Any]:
    """The one external-data file every graph of the build reads its weights from."""
    key = json_sha256({
        "weights": source.loaded.weights_sha256,
        "precision": precision,
        "code": _code_digest(["hilo_export.export.external"]),  # the file's layout
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
    key = _graph_key(loaded, spec, weights["key"])
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
    engine_key = _engine_key(onnx_sha, profiles, spec.precision, backend.name, backend.version(), device,
                             getattr(backend, "plugin_key", None))
    old_engine = old["engine"] if old else None
    if old_engine and old_engine["key"] == engine_key and files_intact(out_dir, old_engine["files"]):
        engine_files = old_engine["files"]
        if engine_files:
            progress(f"{spec.kind} engine: up to date")
    else:
        engine_source = EngineSource(type(source.meta).__name__, _plain(dict(loaded.model.config)), spec.to_json(),
                                     source.weights, weights["key"], PRECISIONS[spec.precision])
        built = backend.build(onnx_path, profiles, spec.precision, out_dir, engine_key, source=engine_source)
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
        "engine": {"key": engine_key, "files": engine_files, "profiles": [p.bucket for p in profiles]},
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
        "code": _code_digest(["hilo_export.planning"]),
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


def _graph_key(loaded: LoadedModel, spec: GraphSpec, weights_key: str) -> str:
    import diffusers
    import onnx
    import onnxscript

    content = {
        "weights": loaded.weights_sha256,
        "weights_file": weights_key,  # the graph names that file and its offsets
        "class": type(loaded.model).__name__,
        "config": _plain(dict(loaded.model.config)),
        "spec": spec.to_json(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "hilo_export": __version__,
        "export_code": _export_code_digest(),
        "opset": ONNX_OPSET,
    }
    return json_sha256(content)


def _export_code_digest() -> str:
    """sha256 of the code that shapes a graph, so a changed exporter never reuses an old file."""
    return _code_digest(["hilo_export.model", "hilo_export.export.graph", "hilo_export.export.external",
                         "hilo_export.export.attention",
                         "hilo_export.export.precision", "hilo_export.export.trt_check"])


def _code_digest(modules: list[str]) -> str:
    """sha256 of the source of ``modules`` (a package: every module in it), found by import name.

    By name, not by file pattern, so that moving a file can never leave the key covering nothing.
    """
    digest = hashlib.sha256()
    for name in modules:
        module = importlib.import_module(name)
        paths = sorted(Path(module.__file__).parent.rglob("*.py")) if hasattr(module, "__path__") else [Path(module.__file__)]
        for path in paths:
            digest.update(path.relative_to(Path(__file__).parents[1]).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _backend_entry(backend, device: str) -> dict[str, Any]:
    entry = {"name": backend.name, "version": backend.version(), "device": device}
    if getattr(backend, "plugins", ()):
        entry["plugins"] = list(backend.plugins)  # engines embed these plugin kernels
    return entry


def _engine_key(onnx_sha: str, profiles: list[Profile], precision: str, backend: str, version: str, device: str,
                plugins: str | None = None) -> str:
    content = {
        "onnx": onnx_sha,
        "profiles": [[p.bucket, *p.shape_range] for p in profiles],
        "precision": precision,
        "backend": [backend, version],
        "device": device,
    }
    if plugins is not None:  # only then, so engines built without plugins keep their keys
        content["plugins"] = plugins
    return json_sha256(content)


def _previous_manifest(out_dir: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(out_dir)
    except ManifestError:
        return None  # nothing reusable: build everything


@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """One build at a time per folder: a second one is refused at once, naming the lock.

    A failure to create or write the folder is a BuildError naming it, not a raw OSError."""
    from filelock import FileLock, Timeout

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(out_dir / LOCK, timeout=0)
        lock.acquire()
    except Timeout:
        raise BuildError(
            f"another hilo-export build is writing {out_dir} (it holds {out_dir / LOCK}); wait for it to finish, "
            "or build into another --out"
        ) from None
    except OSError as err:
        raise BuildError(f"cannot write the engine folder {out_dir} ({err.strerror}); choose a writable --out") from None
    try:
        yield
    except OSError as err:
        inside = err.filename is None or Path(err.filename).resolve().is_relative_to(out_dir.resolve())
        if err.errno not in _UNWRITABLE or not inside:
            raise
        raise BuildError(f"cannot write in {out_dir} ({err.strerror}: {err.filename}); choose a writable --out") from None
    finally:
        lock.release()


def _remove_leftovers(out_dir: Path) -> None:
    """What killed builds left behind: staging folders and temporaries (dot-files of ours; under
    the lock no other build is writing them)."""
    for path in out_dir.iterdir():
        if path.name.startswith(".") and _OWNED.match(path.name):
            _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_unreferenced(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Our files the manifest no longer names, and what interrupted builds left behind."""
    keep = {entry["path"] for entry in all_files(manifest)}
    for path in out_dir.iterdir():
        if _OWNED.match(path.name) and path.name not in keep:
            _remove(path)


def _plain(value: Any) -> Any:
    """JSON-safe copy of a diffusers config (tuples to lists, private keys dropped)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _tool_versions() -> dict[str, str]:
    import importlib.metadata as metadata

    versions = {"python": platform.python_version()}
    for package in ("torch", "diffusers", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "tensorrt", "polygraphy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


"""``hilo-export triton``: a Triton Inference Server model repository from a built folder.

    REPO/planner/          onnxruntime, CPU: the build's ONNX planner (planning/onnx_planner.py)
    REPO/dit_hilo/         the HiLo graph: every bucket but full
    REPO/dit_full/         the full graph
    REPO/hilo_edit_step/   Python backend (BLS): planner -> DiT of the planned bucket -> full grid

DiT models are ``onnxruntime`` models of the exported ONNX files (the ``hilo`` functions are
inside them: no custom op library), or ``tensorrt_plan`` models of the folder's TensorRT
engines. A TensorRT engine holds one optimization profile per bucket; its model lists every
profile in ``instance_group.profile`` (Triton uses only profile 0 otherwise) and Triton picks
the profile whose shapes fit the request: bucket profiles cover disjoint ``k_kept`` ranges
(exact sizing: (previous bucket's size, its size]; padded: exactly its size), so the routing is
unambiguous. One model per graph rather than per bucket keeps
one copy of the weights on the GPU (README, Serving with Triton).

Every ``config.pbtxt`` is written from plain data, then parsed with Triton's own schema
(``tritonclient.grpc.model_config_pb2.ModelConfig``) and its inputs and outputs compared with
the ONNX files and the manifest. The repository is assembled beside ``--out`` and moved into
place only once it validates.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import HiLoError
from ..folder.manifest import all_files, check_graphs, entry_path, read_manifest, value_info, verify_files
from ..planning.buckets import FULL
from ..planning.plan import LowFreqLayout
from . import router as router_module

log = logging.getLogger(__name__)

PLANNER = "planner"
STEP = "hilo_edit_step"
VERSION = "1"
ENGINE_ONLY_INPUTS = ("keep_indices", "fill")
_DTYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
    "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
}
_INSTALL_HINT = "pip install 'tritonclient[grpc]' (or pip install 'hilo-export[serving]')"


class TritonRepoError(HiLoError, ValueError):
    """A repository that cannot be written or does not validate; the message says how to fix it."""


def dit_model(kind: str) -> str:
    return f"dit_{kind}"


class _Enum(str):
    """A protobuf enum value: written bare in text format."""


# ------------------------------------------------------------------ configs as plain data


def model_configs(manifest: dict[str, Any], backend: str, max_batch: int = 0) -> dict[str, dict[str, Any]]:
    """Every model's config (``config.pbtxt`` content as a dict) for a built folder's manifest."""
    if backend not in ("ort", "trt"):
        raise TritonRepoError(f"unknown backend {backend!r}: use ort (onnxruntime models) or trt (tensorrt_plan models)")
    if max_batch < 0:
        raise TritonRepoError(f"--max-batch must be 0 (no batching) or more, got {max_batch}")
    planner = _planner_entry(manifest)
    configs = {
        PLANNER: {
            "name": PLANNER,
            "backend": "onnxruntime",
            "max_batch_size": 0,
            "input": [_tensor(v) for v in planner["inputs"]],
            "output": [_tensor(v) for v in planner["outputs"]],
            "instance_group": [{"count": 1, "kind": _Enum("KIND_CPU")}],
        }
    }
    for kind, graph in manifest["graphs"].items():
        name = dit_model(kind)
        config: dict[str, Any] = {"name": name}
        if backend == "ort":
            # KIND_AUTO: on a GPU when the container's ONNX Runtime has one, else on the CPU
            config.update(backend="onnxruntime", max_batch_size=0)
            group = {"count": 1, "kind": _Enum("KIND_AUTO")}
        else:
            config.update(platform="tensorrt_plan", max_batch_size=0)
            profiles = [str(i) for i in range(len(graph["engine"]["profiles"]))]
            group = {"count": 1, "kind": _Enum("KIND_GPU"), "profile": profiles}
        config["input"] = [_tensor(v) for v in graph["inputs"]]
        config["output"] = [_tensor(v) for v in graph["outputs"]]
        config["instance_group"] = [group]
        configs[name] = config
    configs[STEP] = _step_config(manifest, max_batch)
    return configs


def _step_config(manifest: dict[str, Any], max_batch: int) -> dict[str, Any]:
    spec = step_io(manifest)
    config = {
        "name": STEP,
        "backend": "python",
        "max_batch_size": max_batch,
        "input": [_tensor(v, optional=v.get("optional", False)) for v in spec["inputs"]],
        "output": [_tensor(v) for v in spec["outputs"]],
        "instance_group": [{"count": 1, "kind": _Enum("KIND_CPU")}],
    }
    if max_batch:
        config["dynamic_batching"] = {}
    return config


def step_io(manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs of ``hilo_edit_step``: the engines' full-grid inputs, image, mask, optional fill."""
    planner = _planner_entry(manifest)
    full = next(b for b in manifest["buckets"] if b["name"] == FULL)
    inputs = [v for v in full["inputs"] if v["name"] not in ENGINE_ONLY_INPUTS]
    clash = {v["name"] for v in inputs} & {router_module.IMAGE, router_module.MASK}
    if clash:
        raise TritonRepoError(f"the engines have inputs named {sorted(clash)}, which hilo_edit_step uses for the planner")
    fill = next(v for v in full["inputs"] if v["name"] == router_module.FILL)
    output = next(v for v in full["outputs"] if v["name"] == router_module.OUTPUT)
    return {
        "inputs": [*inputs, *planner["inputs"], {**fill, "optional": True}],
        "outputs": [output, {"name": router_module.BUCKET, "dtype": "int64", "shape": [1]}],
    }


def routing(manifest: dict[str, Any]) -> dict[str, Any]:
    """What router.py needs to know about the folder (written as routing.json)."""
    spec = step_io(manifest)
    grid = tuple(manifest["grid"])
    factor = manifest["planner"]["lowfreq_factor"]
    width, height = manifest["resolution"]
    full_grid = [v for v in spec["inputs"] if v["name"] not in (router_module.IMAGE, router_module.MASK, router_module.FILL)]
    fill = next(v for v in spec["inputs"] if v["name"] == router_module.FILL)
    for bucket in manifest["buckets"]:  # the full-grid inputs are the same for every bucket
        same = [v for v in bucket["inputs"] if v["name"] not in ENGINE_ONLY_INPUTS]
        if same != full_grid:
            raise TritonRepoError(f"bucket {bucket['name']} takes other full-grid inputs than full; rebuild the folder")
    return {
        "format": router_module.ROUTING_FORMAT,
        "image_size": [height, width],
        "batch": manifest["batch"],
        "n_tokens": grid[0] * grid[1],
        "planner": PLANNER,
        "inputs": full_grid,
        "fill": {k: v for k, v in fill.items() if k != "optional"},
        "buckets": [
            {
                "name": b["name"],
                "model": dit_model(b["graph"]),
                "kept": b["kept"],
                "kept_min": b["kept_min"],
                "n_lowfreq": b["n_lowfreq"],
                "outputs": [v["name"] for v in b["outputs"]],
            }
            for b in manifest["buckets"]
        ],
        "block_of_token": None if factor is None else LowFreqLayout(factor, grid).block_of_token().tolist(),
    }


def _planner_entry(manifest: dict[str, Any]) -> dict[str, Any]:
    planner = manifest.get("planner_model")
    if planner is None:
        raise TritonRepoError(
            "this folder has no ONNX planner (it was built before hilo-export wrote one); "
            "run hilo-export build again with the same options to add it"
        )
    return planner


def _tensor(value: dict[str, Any], optional: bool = False) -> dict[str, Any]:
    dtype = _DTYPES.get(value["dtype"])
    if dtype is None:
        raise TritonRepoError(f"{value['name']}: Triton has no data type for {value['dtype']}")
    entry = {"name": value["name"], "data_type": _Enum(dtype), "dims": [d if isinstance(d, int) else -1 for d in value["shape"]]}
    if optional:
        entry["optional"] = True
    return entry


def to_pbtxt(config: dict[str, Any], indent: int = 0) -> str:
    """Protobuf text format of a config dict (enums as _Enum, repeated messages as lists of dicts)."""
    pad = "  " * indent
    lines = []
    for key, value in config.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", to_pbtxt(value, indent + 1), f"{pad}}}"] if value else [f"{pad}{key} {{ }}"]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            blocks = [f"{pad}  {{\n{to_pbtxt(item, indent + 2)}\n{pad}  }}" for item in value]
            lines.append(f"{pad}{key} [\n" + ",\n".join(blocks) + f"\n{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line)


def _scalar(value: Any) -> str:
    if isinstance(value, _Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


# ------------------------------------------------------------------ writing


def write_repository(folder: Path, out: Path, backend: str | None = None, max_batch: int = 0, force: bool = False,
                     progress: Callable[[str], None] = log.info) -> Path:
    """Write and validate the repository for ``folder`` at ``out``; returns ``out``.

    Nothing is written outside ``out`` (and its staging folder beside it): every file the manifest
    names is confined to ``folder`` and keeps its name relative to its model version folder."""
    folder, out = Path(folder), Path(out)
    try:
        return _write_repository(folder, out, backend, max_batch, force, progress)
    except OSError as err:
        where = err.filename or out
        raise TritonRepoError(f"cannot write the repository at {out} ({err.strerror}: {where}); choose a writable --out") from None


def _write_repository(folder: Path, out: Path, backend: str | None, max_batch: int, force: bool,
                      progress: Callable[[str], None]) -> Path:
    manifest = read_manifest(folder)
    backend = backend or manifest["backend"]["name"]
    if backend == "trt" and manifest["backend"]["name"] != "trt":
        raise TritonRepoError(
            f"{folder} holds {manifest['backend']['name']} engines, no TensorRT ones: build them on the serving GPU "
            "(hilo-export build --backend trt, with the TensorRT of your Triton container), or use --backend ort"
        )
    if out.exists() and any(out.iterdir()) and not force:
        raise TritonRepoError(f"{out} exists and is not empty; choose another --out, or pass --force to replace it")
    configs = model_configs(manifest, backend, max_batch)
    progress(f"checking {folder} against its manifest")
    verify_files(folder, all_files(manifest))  # each file once: the graphs share one weights file
    check_graphs(folder, manifest)  # the graphs are the ones described, reading only their own files

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", suffix=".partial", dir=out.parent))
    try:
        _link(entry_path(folder, manifest["planner_model"]["files"][0]), staging / PLANNER / VERSION / "model.onnx")
        for kind, graph in manifest["graphs"].items():
            version = staging / dit_model(kind) / VERSION
            if backend == "trt":
                _link(entry_path(folder, graph["engine"]["files"][0]), version / "model.plan")
            else:
                onnx_file, *data = graph["files"]
                _link(entry_path(folder, onnx_file), version / "model.onnx")
                for entry in data:  # external weights keep the name the ONNX file refers to
                    _link(entry_path(folder, entry), version / entry["path"])
        step = staging / STEP / VERSION
        step.mkdir(parents=True)
        serving = Path(router_module.__file__).parent
        shutil.copyfile(serving / "router.py", step / "router.py")
        shutil.copyfile(serving / "model.py", step / "model.py")
        (step / router_module.ROUTING_FILE).write_text(json.dumps(routing(manifest), indent=1) + "\n")
        for name, config in configs.items():
            (staging / name / "config.pbtxt").write_text(to_pbtxt(config) + "\n")
        progress("validating every config.pbtxt with Triton's model config schema")
        validate_repository(staging, manifest, backend)
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress(f"wrote {out}: {', '.join(sorted(configs))}")
    return out


def _link(source: Path, target: Path) -> None:
    """Hard link (engine files are content-addressed and never rewritten in place), else a copy
    with the source's permission bits: the repository never widens who may read an engine."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
        shutil.copymode(source, target)


def _replace(staging: Path, out: Path) -> None:
    # mkdtemp makes a private folder: open the folders we made; files keep their own modes (a
    # hard link shares its inode with the engine file, so chmod-ing it would change the engine's)
    for path in staging.rglob("*"):
        if path.is_dir():
            os.chmod(path, 0o755)
    os.chmod(staging, 0o755)
    if not out.exists():
        os.replace(staging, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}-", suffix=".old", dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------ validation


def parse_config(path: Path):
    """A config.pbtxt parsed with Triton's schema (unknown fields and bad values are errors)."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except (ImportError, RuntimeError) as err:  # tritonclient without grpc raises RuntimeError
        raise TritonRepoError(f"validating Triton configs needs tritonclient's model_config_pb2: {_INSTALL_HINT}") from err
    try:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except text_format.ParseError as err:
        raise TritonRepoError(f"{path} does not parse as a Triton ModelConfig: {err}") from None


def validate_repository(repo: Path, manifest: dict[str, Any], backend: str) -> list[str]:
    """Parse every config.pbtxt with Triton's schema and compare its inputs and outputs with the
    model files (ONNX) and the manifest; returns the model names. Raises TritonRepoError."""
    import onnx

    repo = Path(repo)
    expected = {PLANNER, STEP, *(dit_model(kind) for kind in manifest["graphs"])}
    found = {p.name for p in repo.iterdir() if p.is_dir()}
    if found != expected:
        raise TritonRepoError(f"{repo} holds models {sorted(found)}, expected {sorted(expected)}")
    planner = _planner_entry(manifest)
    for name in sorted(expected):
        config = parse_config(repo / name / "config.pbtxt")
        where = f"{repo / name / 'config.pbtxt'}"
        if config.name != name:
            raise TritonRepoError(f"{where}: name {config.name!r} differs from its folder {name!r}")
        version = repo / name / VERSION
        if name == STEP:
            _expect(where, config, "python", None, [version / "model.py", version / "router.py", version / router_module.ROUTING_FILE])
            io = step_io(manifest)
            _same_io(where, config, io["inputs"], io["outputs"], "the manifest's engine inputs and the planner")
            continue
        if name == PLANNER:
            _expect(where, config, "onnxruntime", None, [version / "model.onnx"])
            _same_io(where, config, planner["inputs"], planner["outputs"], "the manifest")
            _same_io(where, config, *_onnx_io(onnx, version / "model.onnx"), "model.onnx")
            continue
        graph = manifest["graphs"][name.removeprefix("dit_")]
        if backend == "trt":
            _expect(where, config, "", "tensorrt_plan", [version / "model.plan"])
            profiles = sorted(int(p) for group in config.instance_group for p in group.profile)
            if profiles != list(range(len(graph["engine"]["profiles"]))):
                raise TritonRepoError(
                    f"{where}: instance_group lists profiles {profiles}, the engine has "
                    f"{len(graph['engine']['profiles'])} (one per bucket: {graph['engine']['profiles']}); list every one"
                )
        else:
            _expect(where, config, "onnxruntime", None, [version / "model.onnx"])
            _same_io(where, config, *_onnx_io(onnx, version / "model.onnx"), "model.onnx")
        _same_io(where, config, graph["inputs"], graph["outputs"], "the manifest")
    return sorted(expected)


def _expect(where: str, config, backend: str, platform: str | None, files: list[Path]) -> None:
    if config.backend != backend or (platform is not None and config.platform != platform):
        raise TritonRepoError(f"{where}: backend {config.backend!r} platform {config.platform!r}, expected {backend or platform!r}")
    if config.max_batch_size and backend != "python":
        raise TritonRepoError(f"{where}: max_batch_size must be 0 (engine shapes include their batch axis)")
    for path in files:
        if not path.is_file():
            raise TritonRepoError(f"{path} is missing; regenerate the repository with hilo-export triton")


def _same_io(where: str, config, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], source: str) -> None:
    from tritonclient.grpc import model_config_pb2

    def described(entries) -> list[tuple]:
        return [
            (e.name, model_config_pb2.DataType.Name(e.data_type), list(e.dims), bool(getattr(e, "optional", False)))
            for e in entries
        ]

    def wanted(values) -> list[tuple]:
        return [(t["name"], t["data_type"], t["dims"], t.get("optional", False)) for t in (_tensor(v, v.get("optional", False)) for v in values)]

    for kind, got, want in (("input", config.input, inputs), ("output", config.output, outputs)):
        if described(got) != wanted(want):
            raise TritonRepoError(f"{where}: {kind}s {described(got)} do not match {source}: {wanted(want)}")


def _onnx_io(onnx, path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    proto = onnx.load(str(path), load_external_data=False)
    return [value_info(v) for v in proto.graph.input], [value_info(v) for v in proto.graph.output]

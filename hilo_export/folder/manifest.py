"""``manifest.json``: what a built engine folder holds, and checks that it still does.

Its structure is checked against ``manifest.schema.json`` (JSON Schema, kept as data beside this
module) before anyone reads a field, and every file it names is confined to the folder: a
manifest is input like any other, and anyone can recompute its digest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import HiLoError
from ..files import atomic_path, confined, read_limited, regular_file

MANIFEST = "manifest.json"
SCHEMA_VERSION = 2  # 2: buckets carry kept_min and a min/opt/max profile (exact sizing)
DIGEST = "manifest_sha256"  # catches edits: the engines were built for exactly this content
# a manifest lists files and tensor shapes: a few hundred kilobytes even for a 12B model
MAX_MANIFEST_BYTES = 16 << 20
# engine files each graph of a folder lists, by backend: ort runs the ONNX file itself, trt has one
# plan, torch a spec file and its weights file (shared by the graphs)
ENGINE_FILES = {"ort": 0, "trt": 1, "torch": 2}


class ManifestError(HiLoError, RuntimeError):
    """A built folder that cannot be used as it is; the message says how to fix it."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"path": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def value_info(value) -> dict[str, Any]:
    """An ONNX graph input or output as the manifest lists it: name, numpy dtype name, shape
    (a dynamic axis by its ``dim_param`` name)."""
    import onnx

    tensor = value.type.tensor_type
    dims = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
    return {"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, "shape": dims}


def entry_path(folder: Path, entry: dict[str, Any]) -> Path:
    """The file a manifest entry names, confined to ``folder``: a relative path that stays inside it
    once symlinks are resolved, naming a regular file (never a device like /dev/zero, a fifo or a folder)."""
    folder = Path(folder)
    fix = "rebuild the folder with hilo-export build"
    path = confined(folder, entry["path"], ManifestError, fix, where=folder / MANIFEST)
    regular_file(path, ManifestError, "engine files must be plain files inside the folder: " + fix, inside=folder)
    return path


def read_verified(folder: Path, entry: dict[str, Any]) -> bytes:
    """The bytes of one file, checked against its sha256 after they were read: what the caller then
    uses is exactly what was verified, however the file changes afterwards."""
    path = entry_path(folder, entry)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ManifestError(f"{path} changed since it was built (sha256 mismatch); rebuild the folder with hilo-export build")
    return data


def verify_files(folder: Path, entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        path = entry_path(folder, entry)
        if sha256_file(path) != entry["sha256"]:
            raise ManifestError(f"{path} changed since it was built (sha256 mismatch); rebuild the folder with hilo-export build")


def files_intact(folder: Path, entries: list[dict[str, Any]]) -> bool:
    try:
        verify_files(folder, entries)
    except ManifestError:
        return False
    return True


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.exists() and not path.is_symlink():
        raise ManifestError(f"{folder} holds no {MANIFEST}: build it first (hilo-export build --model ... --out {folder})")
    fix = "rebuild the folder with hilo-export build"
    raw = read_limited(path, MAX_MANIFEST_BYTES, ManifestError, fix)
    try:
        return _parse(raw, path)
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); {fix}") from None
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path} is not valid JSON ({err}); {fix}") from None
    except RecursionError:  # parsing, the digest and the schema check all recurse
        raise ManifestError(f"{path} nests its JSON too deeply to be a manifest; {fix}") from None


def _parse(raw: bytes, path: Path) -> dict[str, Any]:
    data = json.loads(raw.decode("utf-8"))
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{path} has manifest schema {version!r}, this hilo-export reads schema {SCHEMA_VERSION}; "
            "rebuild the folder with this version's hilo-export build"
        )
    if data.get(DIGEST) != _digest(data):
        raise ManifestError(f"{path} was edited since it was built (its digest does not match); rebuild the folder")
    check_structure(data, path)
    return data


@functools.cache
def _validator():
    import jsonschema

    schema = json.loads((Path(__file__).with_name("manifest.schema.json")).read_text())
    return jsonschema.Draft202012Validator(schema)


def check_structure(data: dict[str, Any], where: Path | str = MANIFEST) -> None:
    """Raise ManifestError (one line: where and what) unless ``data`` has the structure readers rely on."""
    error = next(iter(sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        at = "/".join(str(p) for p in error.absolute_path) or "the top level"
        what = error.message
        if error.validator == "pattern" and list(error.absolute_path)[-1:] == ["path"]:
            what = f"{error.instance!r} is outside its folder (paths are relative, without '..')"
        raise ManifestError(f"{where} is malformed at {at}: {what}; rebuild the folder with hilo-export build")
    names = [b["name"] for b in data["buckets"]]
    for bucket in data["buckets"]:
        if bucket["graph"] not in data["graphs"]:
            raise ManifestError(f"{where} is malformed: bucket {bucket['name']} runs on graph {bucket['graph']!r}, "
                                "which it does not list; rebuild the folder with hilo-export build")
        p = bucket["profile"]
        if not (p["min"] == bucket["kept_min"] <= p["opt"] <= p["max"] == bucket["kept"]):
            raise ManifestError(f"{where} is malformed: bucket {bucket['name']} keeps {bucket['kept_min']}..{bucket['kept']} "
                                f"tokens but its profile is {p}; rebuild the folder with hilo-export build")
    if "full" not in names or len(set(names)) != len(names):
        raise ManifestError(f"{where} is malformed: buckets {names} must be unique and include full; rebuild the folder")
    for kind, graph in data["graphs"].items():
        engines = len(graph["engine"]["files"])
        if engines != ENGINE_FILES.get(data["backend"]["name"], 0):
            raise ManifestError(f"{where} is malformed: a {data['backend']['name']} folder's {kind} graph lists {engines} "
                                "engine files; rebuild the folder with hilo-export build")
        keep = next((v for v in graph["inputs"] if v["name"] == "keep_indices"), None)
        if keep is not None and keep["shape"][:1] != [data["batch"]]:
            raise ManifestError(f"{where} is malformed: batch {data['batch']} but the {kind} graph takes "
                                f"keep_indices of shape {keep['shape']}; rebuild the folder with hilo-export build")


def check_graphs(folder: Path, data: dict[str, Any]) -> None:
    """Check the ONNX files a manifest names against it, without their weights: each parses, takes and
    gives what the manifest says, and reads external data only from its own files in the manifest,
    within their bytes. Cheap (graph files are small), so every reader does it before using them."""
    folder = Path(folder)
    graphs = [(kind, graph["files"], graph) for kind, graph in data["graphs"].items()]
    if "planner_model" in data:
        graphs.append(("planner", data["planner_model"]["files"], data["planner_model"]))
    for kind, (onnx_entry, *data_files), described in graphs:
        path = entry_path(folder, onnx_entry)
        proto = _load_graph(path)
        got = ([value_info(v) for v in proto.graph.input], [value_info(v) for v in proto.graph.output])
        if got != (described["inputs"], described["outputs"]):
            raise ManifestError(f"{path} takes or gives other tensors than {folder / MANIFEST} lists for the {kind} graph "
                                "(a file from another build?); rebuild the folder with hilo-export build")
        _check_external(folder, path, proto, {entry["path"]: entry for entry in data_files})


def _load_graph(path: Path):
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError and others: any means "not ONNX"
        raise ManifestError(f"{path} is not an ONNX model ({type(err).__name__}); rebuild the folder with hilo-export build") from None


def _check_external(folder: Path, path: Path, proto, files: dict[str, dict[str, Any]]) -> None:
    import onnx

    fix = "rebuild the folder with hilo-export build"
    tensors = list(proto.graph.initializer)
    tensors += [a.t for node in proto.graph.node for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    needed: dict[str, int] = {}
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        if location not in files:
            raise ManifestError(f"{path}: tensor {tensor.name} reads external data from {location!r}, which is not one of "
                                f"this graph's files in {MANIFEST}; {fix}")
        try:
            offset, length = int(info.get("offset", 0)), int(info["length"])
        except (KeyError, ValueError):
            raise ManifestError(f"{path}: tensor {tensor.name} has no valid offset and length of its external data; {fix}") from None
        if offset < 0 or length < 0 or offset + length > files[location]["bytes"]:
            raise ManifestError(f"{path}: tensor {tensor.name} reads bytes {offset}..{offset + length} of {location}, "
                                f"which holds {files[location]['bytes']}; {fix}")
        needed[location] = max(needed.get(location, 0), offset + length)
    for location, end in needed.items():
        target = entry_path(folder, files[location])
        size = target.stat().st_size
        if size < end:
            raise ManifestError(f"{target} is {size} bytes, but its graphs read up to byte {end} (a truncated copy?); {fix}")


def write_manifest(folder: Path, data: dict[str, Any]) -> Path:
    path = Path(folder) / MANIFEST
    data = {**data, DIGEST: _digest(data)}
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)  # a folder in the manifest's place (a rename cannot replace it): the name is ours
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return path


def json_sha256(content: Any) -> str:
    """sha256 of JSON-able content in a canonical spelling (cache keys, the manifest digest)."""
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _digest(data: dict[str, Any]) -> str:
    """sha256 of the manifest's content without the digest itself."""
    return json_sha256({k: v for k, v in data.items() if k != DIGEST})


def all_files(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every file entry a manifest references (graphs, engines and the ONNX planner), each once.

    The graphs share one weights file: it is listed by each graph that reads it, verified once."""
    entries = []
    for graph in data["graphs"].values():
        entries += graph["files"] + graph["engine"]["files"]
    # folders built before the ONNX planner existed have none; hilo-export triton asks for a rebuild
    entries += data.get("planner_model", {}).get("files", [])
    return list({entry["path"]: entry for entry in entries}.values())

"""Would TensorRT's ONNX parser accept this graph? A static check, nothing is run.

Every node is checked against TensorRT's published ONNX operator support for one TensorRT
version (``hilo_export/data/tensorrt/onnx_operators_<version>.json``, transcribed from
onnx-tensorrt's ``docs/operators.md``; the file names its source commit): the op type and
domain, the element type of every input (from ONNX shape inference), the restrictions the
table states that can be checked without running (inputs that must be constants, attribute
values, outputs TensorRT cannot produce), the opset range, and float64 anywhere.

``hilo`` nodes are plugins-or-inlined-functions: accepted when the model carries a local
function of that name (TensorRT's parser inlines it unless a ``hilo`` plugin is loaded) whose
body passes the same check with the call's input types. Any other custom domain is rejected.
Works on any precision and size: external weights are never loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ExportError

TENSORRT_VERSION = "10.1"
PLUGIN_DOMAINS = ("hilo",)
_STANDARD = ("", "ai.onnx")


@dataclass(frozen=True)
class Rejection:
    graph: str
    node: str
    op_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.graph}: node {self.node!r} ({self.op_type}): {self.reason}"


def support_table(version: str = TENSORRT_VERSION) -> dict[str, Any]:
    path = resources.files("hilo_export") / "data" / "tensorrt" / f"onnx_operators_{version}.json"
    if not path.is_file():
        known = sorted(p.name for p in (resources.files("hilo_export") / "data" / "tensorrt").iterdir())
        raise ExportError(f"no TensorRT {version} operator table; tables here: {', '.join(known)}")
    return json.loads(path.read_text())


def check_graph(path: Path, table: dict[str, Any] | None = None) -> list[Rejection]:
    """Every node of the ONNX file at ``path`` that TensorRT's parser would reject (empty: accepted)."""
    import onnx

    table = table or support_table()
    proto = onnx.load(str(path), load_external_data=False)  # types only: the weights stay on disk
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = _elem_types(inferred.graph)
    name = Path(path).name
    rejections = []
    opset = next((o.version for o in proto.opset_import if o.domain in _STANDARD), None)
    low, high = table["opset"]["min"], table["opset"]["max"]
    if opset is None or not low <= opset <= high:
        rejections.append(Rejection(name, "<model>", "opset", f"opset {opset} is outside TensorRT {table['tensorrt']}'s {low}-{high}"))
    constants = {t.name for t in proto.graph.initializer}
    constants |= {out for n in proto.graph.node if n.op_type == "Constant" for out in n.output}
    functions = {(f.domain, f.name): f for f in proto.functions}
    for node in proto.graph.node:
        rejections += _check_node(node, types, constants, functions, table, name)
    return rejections


def _check_node(node, types: dict[str, int], constants: set[str], functions: dict, table: dict[str, Any],
                graph: str) -> list[Rejection]:
    import onnx

    def reject(reason: str) -> list[Rejection]:
        return [Rejection(graph, node.name or "<unnamed>", node.op_type, reason)]

    if node.domain in PLUGIN_DOMAINS:
        function = functions.get((node.domain, node.op_type))
        if function is None:
            return reject(f"custom op {node.domain}.{node.op_type} has no local function: TensorRT needs a plugin of that name")
        # the body, with the call's input types bound to the function's inputs
        inner = {formal: types[actual] for formal, actual in zip(function.input, node.input) if actual in types}
        body_constants = {out for n in function.node if n.op_type == "Constant" for out in n.output}
        body_types = _propagate(function, inner)
        found = []
        for body_node in function.node:
            for rejection in _check_node(body_node, body_types, body_constants, {}, table, graph):
                found += reject(f"its function body would be rejected: {rejection.op_type}: {rejection.reason}")
        return found
    if node.domain not in _STANDARD:
        return reject(f"domain {node.domain!r} is not ONNX's and not a hilo plugin op")
    entry = table["operators"].get(node.op_type)
    if entry is None or not entry["supported"]:
        return reject(f"TensorRT {table['tensorrt']} does not support {node.op_type}")
    checks = table["checks"]
    found = []
    allowed = set(entry.get("types", []))
    for value in node.input:
        if not value or value not in types:
            continue  # optional input left out, or a type inference could not name
        dtype = onnx.TensorProto.DataType.Name(types[value])
        if dtype == "DOUBLE" or (allowed and dtype not in allowed):
            found += reject(f"input {value!r} is {dtype}; TensorRT {table['tensorrt']} takes {', '.join(sorted(allowed))}")
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type in checks["cast_targets"] and "to" in attributes:
        target = onnx.TensorProto.DataType.Name(attributes["to"])
        if target not in allowed:
            found += reject(f"casts to {target}, which TensorRT cannot represent")
    for attribute, values in checks["attribute_values"].get(node.op_type, {}).items():
        value = attributes.get(attribute)
        value = value.decode() if isinstance(value, bytes) else value
        if value is not None and value not in values:
            found += reject(f"attribute {attribute}={value!r}; TensorRT supports {values}")
    for attribute in checks["forbidden_attributes"].get(node.op_type, []):
        if attribute in attributes:
            found += reject(f"attribute {attribute} is not supported")
    if node.op_type in checks["first_output_only"] and any(node.output[1:]):
        found += reject(f"uses outputs beyond the first ({[o for o in node.output[1:] if o]}); TensorRT produces only Y")
    needs_constant = checks["constant_inputs"].get(node.op_type, [])
    if needs_constant:
        names = _input_names(node.op_type)
        for formal, actual in zip(names, node.input):
            if formal in needs_constant and actual and actual not in constants:
                found += reject(f"input {formal} ({actual!r}) must be an initializer or Constant for TensorRT")
    return found


def _propagate(function, known: dict[str, int]) -> dict[str, int]:
    """Element types inside a function body: the call's input types, run through the body in order.

    The hilo bodies only move data (Unsqueeze, GatherND, ScatterElements, Shape, Expand), so an
    output has its first input's type; Shape gives int64. Enough to check the body's inputs."""
    import onnx

    types = dict(known)
    for node in function.node:
        if node.op_type == "Constant":
            tensor = next((a.t for a in node.attribute if a.name == "value"), None)
            types[node.output[0]] = tensor.data_type if tensor is not None else onnx.TensorProto.INT64
        elif node.op_type == "Shape":
            types[node.output[0]] = onnx.TensorProto.INT64
        elif node.input and node.input[0] in types:
            for out in node.output:
                types[out] = types[node.input[0]]
    return types


def _input_names(op_type: str) -> list[str]:
    import onnx

    try:
        return [i.name for i in onnx.defs.get_schema(op_type, 20).inputs]
    except onnx.defs.SchemaError:
        return []


def _elem_types(graph) -> dict[str, int]:
    types = {t.name: t.data_type for t in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    return types


def check_folder(folder: Path, version: str = TENSORRT_VERSION) -> dict[str, list[Rejection]]:
    """Every graph of a built folder (from its manifest): graph kind -> rejections."""
    from ..folder.manifest import check_graphs, entry_path, read_manifest

    manifest = read_manifest(folder)
    check_graphs(Path(folder), manifest)  # each file parses and is the graph the manifest describes
    table = support_table(version)
    return {kind: check_graph(entry_path(Path(folder), graph["files"][0]), table) for kind, graph in manifest["graphs"].items()}

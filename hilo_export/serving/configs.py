"""Triton ``config.pbtxt`` content for a built folder, as plain data, and its protobuf text spelling.

``repository.py`` writes these and validates them with Triton's own schema.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import HiLoError, install_hint
from ..folder.backends import BACKENDS
from ..model.engine import ENGINE_INPUTS
from ..planning.buckets import FULL
from . import router as router_module

PLANNER = "planner"
STEP = "hilo_edit_step"
VERSION = "1"
_DTYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
    "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
}
INSTALL_HINT = install_hint("serving")


class TritonRepoError(HiLoError, ValueError):
    """A repository that cannot be written or does not validate; the message says how to fix it."""


def dit_model(kind: str) -> str:
    return f"dit_{kind}"


class _Enum(str):
    """A protobuf enum value: written bare in text format."""


# ------------------------------------------------------------------ configs as plain data


def model_configs(manifest: dict[str, Any], backend: str, max_batch: int = 0) -> dict[str, dict[str, Any]]:
    """Every model's config (``config.pbtxt`` content as a dict) for a built folder's manifest."""
    if backend not in BACKENDS:
        raise TritonRepoError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)} "
                              "(ort: onnxruntime models, trt: tensorrt_plan models)")
    if max_batch < 0:
        raise TritonRepoError(f"--max-batch must be 0 (no batching) or more, got {max_batch}")
    planner = planner_entry(manifest)
    configs = {
        PLANNER: {
            "name": PLANNER,
            "backend": "onnxruntime",
            "max_batch_size": 0,
            "input": [tensor_config(v) for v in planner["inputs"]],
            "output": [tensor_config(v) for v in planner["outputs"]],
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
        config["input"] = [tensor_config(v) for v in graph["inputs"]]
        config["output"] = [tensor_config(v) for v in graph["outputs"]]
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
        "input": [tensor_config(v, optional=v.get("optional", False)) for v in spec["inputs"]],
        "output": [tensor_config(v) for v in spec["outputs"]],
        "instance_group": [{"count": 1, "kind": _Enum("KIND_CPU")}],
    }
    if max_batch:
        config["dynamic_batching"] = {}
    return config


def step_io(manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs of ``hilo_edit_step``: the engines' full-grid inputs, image, mask, optional fill."""
    planner = planner_entry(manifest)
    full = next(b for b in manifest["buckets"] if b["name"] == FULL)
    inputs = [v for v in full["inputs"] if v["name"] not in ENGINE_INPUTS]
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
    width, height = manifest["resolution"]
    full_grid = [v for v in spec["inputs"] if v["name"] not in (router_module.IMAGE, router_module.MASK, router_module.FILL)]
    fill = next(v for v in spec["inputs"] if v["name"] == router_module.FILL)
    for bucket in manifest["buckets"]:  # the full-grid inputs are the same for every bucket
        same = [v for v in bucket["inputs"] if v["name"] not in ENGINE_INPUTS]
        if same != full_grid:
            raise TritonRepoError(f"bucket {bucket['name']} takes other full-grid inputs than full; rebuild the folder")
    return {
        "format": router_module.ROUTING_FORMAT,
        "image_size": [height, width],
        "batch": manifest["batch"],
        "planner": PLANNER,
        "inputs": full_grid,
        "fill": {k: v for k, v in fill.items() if k != "optional"},
        "buckets": [
            {
                "name": b["name"],
                "model": dit_model(b["graph"]),
                "kept": b["kept"],
                "kept_min": b["kept_min"],
                "use_fill": any(v["name"] == router_module.USE_FILL for v in b["inputs"]),
            }
            for b in manifest["buckets"]
        ],
    }


def planner_entry(manifest: dict[str, Any]) -> dict[str, Any]:
    planner = manifest.get("planner_model")
    if planner is None:
        raise TritonRepoError(
            "this folder has no ONNX planner (it was built before hilo-export wrote one); "
            "run hilo-export build again with the same options to add it"
        )
    return planner


def tensor_config(value: dict[str, Any], optional: bool = False) -> dict[str, Any]:
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

"""Cache keys: what defines each file of a build, hashed, so a repeated build reuses exactly the files
whose inputs did not change (code included: found by module name, never by file pattern)."""

from __future__ import annotations

import functools
import hashlib
import importlib
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..folder.backends import Profile
from ..folder.manifest import json_sha256
from ..model.loading import LoadedModel
from .graph import ONNX_OPSET, GraphSpec


def graph_key(loaded: LoadedModel, spec: GraphSpec, weights_key: str) -> str:
    import diffusers
    import onnx
    import onnxscript

    content = {
        "weights": loaded.weights_sha256,
        "weights_file": weights_key,  # the graph names that file and its offsets
        "class": type(loaded.model).__name__,
        "config": plain(dict(loaded.model.config)),
        "spec": spec.to_json(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "hilo_export": __version__,
        "export_code": export_code_digest(),
        "opset": ONNX_OPSET,
    }
    return json_sha256(content)


@functools.cache  # the source does not change inside one process; a build asks once per graph
def export_code_digest() -> str:
    """sha256 of the code that shapes a graph, so a changed exporter never reuses an old file."""
    return code_digest(["hilo_export.model", "hilo_export.export.graph", "hilo_export.export.external",
                         "hilo_export.export.attention",
                         "hilo_export.export.precision", "hilo_export.export.trt_check"])


def code_digest(modules: list[str]) -> str:
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


def engine_key(onnx_sha: str, profiles: list[Profile], precision: str, backend: str, version: str, device: str,
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


def plain(value: Any) -> Any:
    """JSON-safe copy of a diffusers config (tuples to lists, private keys dropped)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value

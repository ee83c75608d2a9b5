"""What a built engine folder holds, as text for people (``hilo-export inspect``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .manifest import read_manifest


def describe(folder: Path) -> str:
    """A few lines on a built folder: model, sizes, backend, graphs with their check, the bucket table."""
    return describe_manifest(read_manifest(folder), folder)


def describe_manifest(manifest: dict[str, Any], folder: Path | str) -> str:
    model, backend = manifest["model"], manifest["backend"]
    width, height = manifest["resolution"]
    plugins = f" with plugins {', '.join(backend['plugins'])}" if backend.get("plugins") else ""
    lines = [
        f"{folder}: {model['name']} ({model['class']}, weights {model['weights_sha256'][:12]})",
        f"  {width}x{height} px, token {manifest['token_size']} px, grid {manifest['grid'][0]}x{manifest['grid'][1]}, "
        f"batch {manifest['batch']}, text {manifest['text_len']} tokens, {manifest['precision']}",
        f"  backend {backend['name']} {backend['version']} on {backend['device']}{plugins}; planner {manifest['planner']}",
    ]
    for kind, graph in manifest["graphs"].items():
        check = graph["check"]
        if "skipped" in check:
            errors = f"not checked ({check['skipped']})"
        else:
            errors = "relative error " + ", ".join(f"K={k}: {v:.1e}" for k, v in check["relative_error"].items())
        files = ", ".join(f"{f['path']} ({f['bytes'] / 1e6:.1f} MB)" for f in graph["files"] + graph["engine"]["files"])
        lines.append(f"  graph {kind}: {files}; ORT vs torch {errors}")
    lines.append(f"  {'bucket':6s} {'fraction':>8s} {'capacity':>8s} {'low-freq':>8s} {'kept':>6s}  graph")
    for b in manifest["buckets"]:
        lines.append(f"  {b['name']:6s} {b['fraction']:8.3f} {b['capacity']:8d} {b['n_lowfreq']:8d} {b['kept']:6d}  {b['graph']}")
    inputs = manifest["graphs"]["full"]["inputs"]
    lines.append("  inputs:  " + ", ".join(f"{v['name']} {v['dtype']}{v['shape']}" for v in inputs))
    return "\n".join(lines)

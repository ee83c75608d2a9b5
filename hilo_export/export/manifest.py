"""``manifest.json``: what a built engine folder holds, and checks that it still does."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..files import atomic_path

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
DIGEST = "manifest_sha256"  # catches edits: the engines were built for exactly this content


class ManifestError(RuntimeError):
    """A built folder that cannot be used as it is; the message says how to fix it."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(folder: Path, path: Path) -> dict[str, Any]:
    return {"path": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def verify_files(folder: Path, entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        path = folder / entry["path"]
        if not path.exists():
            raise ManifestError(f"{path} is missing; rebuild the folder with hilo-export build")
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
    if not path.exists():
        raise ManifestError(f"{folder} holds no {MANIFEST}: build it first (hilo-export build --model ... --out {folder})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path} is not valid JSON ({err}); rebuild the folder with hilo-export build") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{path} has manifest schema {version!r}, this hilo-export reads schema {SCHEMA_VERSION}; "
            "rebuild the folder with this version's hilo-export build"
        )
    if data.get(DIGEST) != _digest(data):
        raise ManifestError(f"{path} was edited since it was built (its digest does not match); rebuild the folder")
    return data


def write_manifest(folder: Path, data: dict[str, Any]) -> Path:
    path = Path(folder) / MANIFEST
    data = {**data, DIGEST: _digest(data)}
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

"""Export and build: torch -> ONNX with ``hilo`` ops and a dynamic token axis, one engine per
bucket through a backend (``ort`` default, ``trt`` lazy, ``torch`` reference), and the
schema-checked ``manifest.json`` that describes a built folder.

Imports ``planning`` and ``model``; nothing model-specific lives here (that is the adapters').
"""

from .backends import BackendError, Profile, get_backend
from .builder import BuildError, BuildRequest, build, parse_resolution
from .graph import (
    PRECISIONS,
    EngineGraph,
    ExportError,
    GraphSpec,
    export_graph,
    relative_error,
)
from .manifest import ManifestError, read_manifest, write_manifest

__all__ = [
    "PRECISIONS", "BackendError", "BuildError", "BuildRequest", "EngineGraph", "ExportError", "GraphSpec", "ManifestError",
    "Profile", "build", "export_graph", "get_backend", "parse_resolution", "read_manifest", "relative_error", "write_manifest",
]

"""Export and build: torch -> ONNX with ``hilo`` ops and a dynamic token axis, one engine per
bucket through a backend (``ort`` default, ``trt`` lazy, ``torch`` reference), written as an
engine folder (``hilo_export.folder``: the manifest and the runners that read it).

Imports ``planning``, ``model`` and ``folder``; nothing model-specific lives here (that is the
adapters').
"""

from .builder import build
from .graph import PRECISIONS, EngineGraph, ExportError, GraphSpec, export_graph, relative_error
from .request import BuildError, BuildRequest, default_out_dir, parse_resolution

__all__ = [
    "PRECISIONS", "BuildError", "BuildRequest", "EngineGraph", "ExportError", "GraphSpec", "build", "default_out_dir",
    "export_graph",
    "parse_resolution", "relative_error",
]

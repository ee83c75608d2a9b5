"""The engine-folder format that export writes and runtime and serving read: ``manifest.json``
(schema, reading, checks), one runner per backend (``ort``, ``trt``, ``torch``) behind the
``Backend``/``Runner`` interface, and the numpy/torch dtype bridge.

Imports ``planning`` (bucket names) and the package's file and error helpers; never the
exporter (``export``), onnxscript, onnx_ir, polygraphy or the evaluation stack, so a process
that only serves engines stays small.
"""

from .backends import Backend, BackendError, Profile, Runner, get_backend
from .manifest import MANIFEST, ManifestError, read_manifest, read_verified, verify_files, write_manifest

__all__ = [
    "MANIFEST", "Backend", "BackendError", "ManifestError", "Profile", "Runner", "get_backend", "read_manifest", "read_verified",
    "verify_files", "write_manifest",
]

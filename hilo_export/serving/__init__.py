"""Serving on Triton Inference Server: the model repository (``repository``), the request
router (``router.py``) and its BLS model (``model.py``). router.py and model.py are copied
into the repository and run inside Triton, so they import nothing from hilo_export.

May import every other stage.
"""

from .repository import TritonRepoError, write_repository

__all__ = ["TritonRepoError", "write_repository"]

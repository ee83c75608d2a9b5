"""The embedded reference editing model: its pixel-token "latent", conditioning, velocity
and pixel decoder (``model``), its inpainting pipeline (``pipeline``), the procedural images
of its training data and of the context probe (``procedural``); the training recipe is
``scripts/train_reference.py``. Its weights are a diffusers folder that ``model.loading``
finds, so nothing below this package needs it.

Imports ``planning`` and ``model``.
"""

from .pipeline import (
    EditInputError,
    EditResult,
    ReferenceInpaintPipeline,
    check_edit_inputs,
)

__all__ = ["EditInputError", "EditResult", "ReferenceInpaintPipeline", "check_edit_inputs"]

"""A diffusers model folder's description: where its config.json is, which class it names, the
digest of its tensors, and the one error for models that cannot be found or loaded.

The bottom of the model stage: ``weights`` (streamed tensors) and ``loading`` (whole models) both
build on it, and it imports neither.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..errors import HiLoError


class ModelError(HiLoError, ValueError):
    """A model that cannot be found or loaded, or is called with inputs it cannot take; the message says what to do."""


def tensors_sha256(tensors) -> str:
    """sha256 of (key, tensor) pairs: names, dtypes, shapes and bytes, in the order given."""
    digest = hashlib.sha256()
    for key, tensor in tensors:
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def transformer_class(config_path: Path):
    """The diffusers transformer class a config.json names; one clear error for anything else."""
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{config_path} is not valid JSON ({err}); restore the model's config.json") from None
    if not isinstance(config, dict):
        raise ModelError(f"{config_path} holds a JSON {type(config).__name__}, not an object of model settings; "
                         "restore the model's config.json")
    class_name = config.get("_class_name", "")
    if not isinstance(class_name, str):
        class_name = ""
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if cls is None or not class_name.endswith("Transformer2DModel"):
        raise ModelError(f"{config_path} describes {class_name or 'no model class'}, not a diffusers DiT transformer")
    return cls


def transformer_folder(path: Path) -> Path:
    """The folder with config.json: ``path`` itself or its ``transformer/`` subfolder (a pipeline folder)."""
    folder = path / "transformer" if (path / "transformer" / "config.json").exists() else path
    if not (folder / "config.json").exists():
        raise ModelError(f"{path} holds no diffusers model: expected config.json in it or in its transformer/ subfolder")
    return folder

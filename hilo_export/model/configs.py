"""A diffusers model folder's description: where its config.json is, which class it names, the
digest of its tensors, and the one error for models that cannot be found or loaded.

The bottom of the model stage: ``weights`` (streamed tensors) and ``loading`` (whole models) both
build on it, and it imports neither.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from ..errors import HiLoError
from ..files import read_limited


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
    raw = read_limited(config_path, MAX_CONFIG_BYTES, ModelError, "restore the model's config.json")
    try:
        config = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
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
    check_settings(config, config_path)
    return cls


MAX_CONFIG_BYTES = 1 << 20
# settings that count blocks (0 allowed) or size something (1 or more); diffusers takes any integer,
# and num_layers: -3 builds a model with no double blocks whose weights are then silently dropped
_COUNT = re.compile(r"^num_.*layers$")
_SIZE = re.compile(r"^num_|_dim$|_dims?_|_dims$|channels$|^patch_size$|^sample_size$|heads$")
MAX_SETTING = 1 << 20


def check_settings(config: dict, config_path: Path) -> None:
    """Refuse a config.json whose block counts and sizes cannot describe a real model."""
    for key, value in config.items():
        if key.startswith("_") or not (_COUNT.search(key) or _SIZE.search(key)) or value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        low = 0 if _COUNT.search(key) else 1
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= MAX_SETTING for v in values):
            raise ModelError(f"{config_path}: {key} is {value!r}; it must be {'an integer' if len(values) < 2 else 'integers'} "
                             f"from {low} to {MAX_SETTING}: restore the model's config.json")


def transformer_folder(path: Path) -> Path:
    """The folder with config.json: ``path`` itself or its ``transformer/`` subfolder (a pipeline folder)."""
    folder = path / "transformer" if (path / "transformer" / "config.json").exists() else path
    if not (folder / "config.json").exists():
        raise ModelError(f"{path} holds no diffusers model: expected config.json in it or in its transformer/ subfolder")
    return folder

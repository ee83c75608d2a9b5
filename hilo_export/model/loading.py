"""Where models come from: built-in random-weight models, local folders, the local hub cache.

Never downloads: a model id must already be in the local Hugging Face cache.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from ..errors import HiLoError
from ..files import read_limited
from ..planning.inputs import DEFAULT_TOKEN_SIZE


class ModelError(HiLoError, ValueError):
    """A model that cannot be found or loaded; the message says what to do."""


# Built-in models: diffusers configs with seeded random weights, for tests, demos and benchmarks.
BUILTIN_CONFIGS = {
    # small enough for CI: exercises every code path in seconds
    "tiny-flux": dict(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    ),
    # Flux.1 width (24 heads x 128), text and pooled sizes, but two blocks: speedup per step
    # depends on width and sequence lengths, not on depth, so benchmark ratios stay honest
    "flux-shaped": dict(
        patch_size=1, in_channels=64, num_layers=0, num_single_layers=2, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
        axes_dims_rope=(16, 56, 56),
    ),
}
# The trained reference model ships with the package (hilo_export/data/reference).
REFERENCE = "reference"
DEFAULT_MODEL = REFERENCE
# Text tokens the engines are built for, per built-in model (Flux.1 uses 512 T5 tokens).
BUILTIN_TEXT_LEN = {"tiny-flux": 8, "flux-shaped": 512, REFERENCE: 1}
DEFAULT_TEXT_LEN = 512
# Pixels per token side: Flux's is 16 (8 px per VAE latent pixel, 2 x 2 patches).
BUILTIN_TOKEN_SIZE = {REFERENCE: 8}
BUILTIN_NAMES = (REFERENCE, *BUILTIN_CONFIGS)


@dataclass
class LoadedModel:
    name: str  # what the user passed, normalized: a built-in name, a folder path or a model id
    source: str  # "builtin", "folder" or "cache"
    model: torch.nn.Module
    weights_sha256: str

    @property
    def slug(self) -> str:
        """A folder name for this model's builds."""
        return self.name.replace("/", "--") if self.source == "cache" else Path(self.name).name


def load_model(name: str) -> LoadedModel:
    if name == REFERENCE:
        model = load_reference()
        return LoadedModel(name, "builtin", model, weights_sha256(model))
    if name in BUILTIN_CONFIGS:
        model = _builtin(name)
        return LoadedModel(name, "builtin", model, weights_sha256(model))
    path = Path(name).expanduser()
    if path.exists():
        model = _from_folder(path)
        return LoadedModel(str(path.resolve()), "folder", model, folder_weights_sha256(path))
    folder = cached_folder(name)
    return LoadedModel(name, "cache", _from_folder(folder), folder_weights_sha256(folder))


def folder_weights_sha256(path: Path) -> str:
    """The weights digest of a folder, read one tensor at a time: equal to ``weights_sha256`` of the
    model the folder holds (in its stored dtype), so a saved built-in keeps its digest."""
    from .weights import ShardedWeights, meta_model, transformer_folder

    folder = transformer_folder(path)
    return ShardedWeights(folder).sha256(list(meta_model(folder).state_dict()))


def reference_weights_dir() -> Path:
    """The embedded reference model: a diffusers folder inside the package."""
    return Path(str(resources.files("hilo_export") / "data" / "reference"))


def load_reference(folder: Path | None = None) -> torch.nn.Module:
    """The trained reference model, in float32 (its weights are stored in float16)."""
    from diffusers import FluxTransformer2DModel

    folder = folder or reference_weights_dir()
    if not (folder / "config.json").exists():
        raise ModelError(f"no reference weights in {folder}: train them with scripts/train_reference.py --out {folder}")
    return FluxTransformer2DModel.from_pretrained(folder, torch_dtype=torch.float32, low_cpu_mem_usage=False).eval()


def text_len_for(name: str) -> int:
    return BUILTIN_TEXT_LEN.get(name, DEFAULT_TEXT_LEN)


def token_size_for(name: str) -> int:
    return BUILTIN_TOKEN_SIZE.get(name, DEFAULT_TOKEN_SIZE)


def weights_sha256(model: torch.nn.Module) -> str:
    return tensors_sha256(model.state_dict().items())


def tensors_sha256(tensors) -> str:
    """sha256 of (key, tensor) pairs: names, dtypes, shapes and bytes, in the order given."""
    digest = hashlib.sha256()
    for key, tensor in tensors:
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _builtin(name: str) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return FluxTransformer2DModel(**BUILTIN_CONFIGS[name]).eval()


def _transformer_class(config_path: Path):
    import json

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


def _from_folder(path: Path) -> torch.nn.Module:
    from .weights import transformer_folder

    folder = transformer_folder(path)
    config = folder / "config.json"
    try:
        return _transformer_class(config).from_pretrained(folder).eval()
    except (OSError, ValueError, RuntimeError, TypeError) as err:
        # TypeError: a setting of the wrong type (a string where a number belongs) reaches torch
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ModelError(f"cannot load the model in {folder}: {first}; check the settings in {config}") from None


def model_folder(name: str) -> Path:
    """The folder of a local model or pipeline (``name`` a path), or of a model id in the local hub cache."""
    path = Path(name).expanduser()
    return path if path.exists() else cached_folder(name)


def cached_folder(model_id: str) -> Path:
    """The snapshot folder of ``model_id`` in the local Hugging Face cache; never downloads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any lookup failure means: not available offline
        known = ", ".join(BUILTIN_NAMES)
        raise ModelError(
            f"model {model_id!r} is not a built-in ({known}), a local folder, or in the local Hugging Face cache; "
            f"download it first (huggingface-cli download {model_id}) or pass its folder"
        ) from None

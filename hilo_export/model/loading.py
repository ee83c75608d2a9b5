"""Where models come from: built-in random-weight models, local folders, the local hub cache.

Never downloads: a model id must already be in the local Hugging Face cache.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..planning.inputs import DEFAULT_TOKEN_SIZE
from .configs import ModelError, tensors_sha256, transformer_class, transformer_folder
from .weights import ShardedWeights, StateDictWeights, WeightSource, check_covers, meta_copy, meta_model

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
# The trained reference model ships with the package (hilo_export/data/reference), and so does
# its HiLo-distilled twin (hilo_export/data/reference-hilo: hilo-export distill's output).
REFERENCE = "reference"
REFERENCE_HILO = "reference-hilo"
REFERENCE_MODELS = (REFERENCE, REFERENCE_HILO)
DEFAULT_MODEL = REFERENCE
# Text tokens the engines are built for, per built-in model (Flux.1 uses 512 T5 tokens).
BUILTIN_TEXT_LEN = {"tiny-flux": 8, "flux-shaped": 512, **{name: 1 for name in REFERENCE_MODELS}}
DEFAULT_TEXT_LEN = 512
# Pixels per token side: Flux's is 16 (8 px per VAE latent pixel, 2 x 2 patches).
BUILTIN_TOKEN_SIZE = {name: 8 for name in REFERENCE_MODELS}
BUILTIN_NAMES = (*REFERENCE_MODELS, *BUILTIN_CONFIGS)


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


def accelerate_available() -> bool:
    """Pass diffusers' ``low_cpu_mem_usage`` explicitly: left at its default without ``accelerate``
    installed, every ``from_pretrained`` (each pipeline component too) logs a warning that it fell back."""
    import importlib.util

    return importlib.util.find_spec("accelerate") is not None


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No progress bars from diffusers and transformers while models load: they draw one per shard,
    pipeline component and weight group, which says nothing the command's own log does not."""
    import importlib

    restore = []
    for name in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            module = importlib.import_module(name)
        except ImportError:  # transformers is the optional fill extra
            continue
        if module.is_progress_bar_enabled():
            module.disable_progress_bar()
            restore.append(module.enable_progress_bar)
    try:
        yield
    finally:
        for enable in restore:
            enable()


def load_model(name: str) -> LoadedModel:
    if name in REFERENCE_MODELS:
        model = load_reference(name)
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
    folder = transformer_folder(path)
    return ShardedWeights(folder).sha256(list(meta_model(folder).state_dict()))


def reference_weights_dir(name: str = REFERENCE) -> Path:
    """An embedded reference model (``reference`` or ``reference-hilo``): a diffusers folder inside the package."""
    if name not in REFERENCE_MODELS:
        raise ModelError(f"{name!r} is not an embedded reference model; use one of {', '.join(REFERENCE_MODELS)}")
    return Path(str(resources.files("hilo_export") / "data" / name))


def load_reference(source: str | Path = REFERENCE) -> torch.nn.Module:
    """An embedded reference model by name, or a reference-model folder (``hilo-export distill``'s
    output), in float32 (the shipped weights are stored in float16)."""
    from diffusers import FluxTransformer2DModel

    from .lowfreq import install

    folder = reference_weights_dir(source) if source in REFERENCE_MODELS else Path(source)
    if not (folder / "config.json").exists():
        if source == REFERENCE_HILO:
            how = f"distill it with hilo-export distill --model reference --out {folder}"
        else:
            how = f"train them with scripts/train_reference.py --out {folder}"
        raise ModelError(f"no reference weights in {folder}: {how}")
    model = FluxTransformer2DModel.from_pretrained(folder, torch_dtype=torch.float32, low_cpu_mem_usage=False).eval()
    install(model, folder)  # a distilled reference model brings its low-frequency embedding
    return model


def text_len_for(name: str) -> int:
    return BUILTIN_TEXT_LEN.get(name, DEFAULT_TEXT_LEN)


def token_size_for(name: str) -> int:
    return BUILTIN_TOKEN_SIZE.get(name, DEFAULT_TOKEN_SIZE)


def weights_sha256(model: torch.nn.Module) -> str:
    return tensors_sha256(model.state_dict().items())


def _builtin(name: str) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return FluxTransformer2DModel(**BUILTIN_CONFIGS[name]).eval()


def _from_folder(path: Path) -> torch.nn.Module:
    from .lowfreq import install

    folder = transformer_folder(path)
    config = folder / "config.json"
    try:
        with quiet_loading():
            model = transformer_class(config).from_pretrained(folder, low_cpu_mem_usage=accelerate_available()).eval()
        install(model, folder)  # a distilled model's learned low-frequency embedding, when it has one
        return model
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


# a folder whose weights take at most this many bytes in float32 is also loaded whole, so the
# build can check the exported graphs against eager torch; larger ones are checked on the device
EAGER_CHECK_BYTES = 2 * 10**9


@dataclass
class ExportModel:
    """What a build needs: the model's description, a meta model to trace, weights to stream."""

    loaded: LoadedModel  # name, source, weights digest; ``model`` is the meta model for folders
    meta: torch.nn.Module
    weights: WeightSource
    eager: Callable[[], torch.nn.Module] | None  # the real float32 model, when small enough to check against


def load_for_export(name: str) -> ExportModel:
    """The model as a build reads it. Built-ins are small and built in memory; folders (and the hub
    cache) are never materialized unless their float32 weights fit in EAGER_CHECK_BYTES."""
    if name in BUILTIN_NAMES:
        loaded = load_model(name)
        return ExportModel(loaded, meta_copy(loaded.model), StateDictWeights(loaded.model), lambda: loaded.model)
    path = Path(name).expanduser()
    source, shown = (path, str(path.resolve())) if path.exists() else (cached_folder(name), name)
    folder = transformer_folder(source)
    meta = meta_model(folder)  # the config first: a broken config.json is the error to report, not the weights
    weights = ShardedWeights(folder)
    check_covers(meta, weights, str(folder))
    loaded = LoadedModel(shown, "folder" if path.exists() else "cache", meta, weights.sha256(list(meta.state_dict())))
    fp32_bytes = sum(4 * math.prod(shape) for _, shape in weights.entries().values())
    eager = (lambda: _from_folder(source).float()) if fp32_bytes <= EAGER_CHECK_BYTES else None
    return ExportModel(loaded, meta, weights, eager)

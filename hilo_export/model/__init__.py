"""The compressed model: HiLo custom ops, sequence plumbing, one adapter per model family,
``HiLoTransformer`` (a stock diffusers DiT on the kept tokens), model loading, and
``tiny_fill`` (a tiny random ``FluxFillPipeline`` from configs, for tests and demos).

Imports ``planning`` only. Holds no export or backend logic.
"""

from .adapters import ADAPTERS, adapter_for
from .loading import (
    BUILTIN_CONFIGS,
    BUILTIN_NAMES,
    DEFAULT_MODEL,
    REFERENCE,
    REFERENCE_HILO,
    REFERENCE_MODELS,
    LoadedModel,
    ModelError,
    load_model,
    load_reference,
    model_folder,
    reference_weights_dir,
    text_len_for,
    token_size_for,
)
from .ops import PLUGIN_ATTRIBUTES, token_gather, token_scatter
from .sequence import PlanTensors, compress, expand
from .transformer import HiLoTransformer

__all__ = [
    "ADAPTERS", "BUILTIN_CONFIGS", "BUILTIN_NAMES", "DEFAULT_MODEL", "PLUGIN_ATTRIBUTES", "REFERENCE", "REFERENCE_HILO",
    "REFERENCE_MODELS", "HiLoTransformer",
    "LoadedModel", "ModelError", "PlanTensors", "adapter_for", "compress", "expand", "load_model", "load_reference", "model_folder",
    "reference_weights_dir", "text_len_for", "token_gather", "token_scatter", "token_size_for",
]

"""Weights without a materialized model: a meta-device model for shapes, tensors read one at a time.

A 12B Flux in float32 is 48 GB; its bf16 safetensors shards are 24 GB. The exporter traces a
model whose parameters live on the meta device (shapes and dtypes, no storage) and the weights
are streamed from a ``WeightSource`` straight into the ONNX external-data file, one tensor in
memory at a time. Two sources: safetensors shards in a diffusers folder (``ShardedWeights``),
and an in-memory model's ``state_dict`` (built-in models, which are small).

Kept apart from ``loading.py`` (which materializes models, and builds ``ExportModel`` on these) on
purpose: this module imports only ``configs``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import torch

from .configs import ModelError, tensors_sha256, transformer_class
from .lowfreq import LOWFREQ_FILE
from .lowfreq import PREFIX as LOWFREQ_PREFIX

SINGLE_FILE = "diffusion_pytorch_model.safetensors"
INDEX_FILE = "diffusion_pytorch_model.safetensors.index.json"


class WeightSource(Protocol):
    """Tensors by state_dict key, read on demand."""

    def entries(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        """dtype and shape of every tensor, by state_dict key (nothing is read)."""

    def tensor(self, key: str) -> torch.Tensor:
        """One tensor, in its stored dtype (a fresh copy the caller may free)."""


class StateDictWeights:
    """An in-memory model's weights (built-in models)."""

    def __init__(self, model: torch.nn.Module):
        self._state = model.state_dict()

    def entries(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        return {key: (t.dtype, tuple(t.shape)) for key, t in self._state.items()}

    def tensor(self, key: str) -> torch.Tensor:
        return self._state[key].detach()


class ShardedWeights:
    """The safetensors file(s) of a diffusers model folder: one file, or shards with an index.

    Each read opens the shard, copies one tensor out and closes it again, so no mapping of a
    10 GB shard stays resident while the next tensors are read.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        index = self.folder / INDEX_FILE
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ModelError(f"{index} is not a safetensors index (no weight_map: {err}); re-save the model") from None
            self._shard_of = {key: self.folder / name for key, name in weight_map.items()}
        elif (self.folder / SINGLE_FILE).exists():
            self._shard_of = None
        else:
            raise ModelError(
                f"{self.folder} holds no safetensors weights ({SINGLE_FILE} or {INDEX_FILE}); "
                "save the model with save_pretrained(..., safe_serialization=True)"
            )
        self._entries = self._read_headers()
        # a distilled model's learned low-frequency embedding: one more file, with its own keys
        self._extra = self.folder / LOWFREQ_FILE
        if self._extra.exists():
            self._entries.update(self._headers(self._extra))

    @property
    def files(self) -> list[Path]:
        return sorted(set(self._shard_of.values())) if self._shard_of else [self.folder / SINGLE_FILE]

    def _read_headers(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:

        entries = {}
        for path in self.files:
            if not path.exists():
                raise ModelError(f"{path} is missing (named in {INDEX_FILE}); copy the whole model folder")
            entries.update(self._headers(path))
        if self._shard_of is not None:
            missing = sorted(set(self._shard_of) - set(entries))
            if missing:
                raise ModelError(f"{INDEX_FILE} in {self.folder} names tensors no shard holds: {missing[:5]}; re-save the model")
        return entries

    @staticmethod
    def _headers(path: Path) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return {key: (_TORCH_DTYPES[f.get_slice(key).get_dtype()], tuple(f.get_slice(key).get_shape())) for key in f.keys()}

    def entries(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        return dict(self._entries)

    def tensor(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        if key.startswith(LOWFREQ_PREFIX) and self._extra.exists():
            path = self._extra
        else:
            path = self._shard_of[key] if self._shard_of else self.folder / SINGLE_FILE
        with safe_open(path, framework="pt") as f:
            return f.get_tensor(key).clone()  # clone: own storage, not a view of the mapping

    def sha256(self, keys: list[str]) -> str:
        """``tensors_sha256`` of the tensors ``keys`` (the model's state_dict order), one in memory at a time."""
        return tensors_sha256((key, self.tensor(key)) for key in keys)


_TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


def meta_model(folder: Path) -> torch.nn.Module:
    """The folder's model class built from its config on the meta device: shapes, no storage."""
    from .lowfreq import install

    config_path = folder / "config.json"
    cls = transformer_class(config_path)
    try:
        config = cls.load_config(folder)
        with torch.device("meta"):
            model = cls.from_config(config).eval()
        install(model, folder)  # a learned low-frequency embedding adds its (meta) tensors
        return model
    except (OSError, ValueError, TypeError, RuntimeError) as err:
        # TypeError: a setting of the wrong type (a string where a number belongs)
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ModelError(f"cannot build the model of {config_path}: {first}; check the settings there") from None


def meta_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A model of the same class and config on the meta device (for tracing without its weights)."""
    from .lowfreq import add_lowfreq, has_lowfreq

    with torch.device("meta"):
        copy = type(model).from_config(model.config).eval()
    if has_lowfreq(model):
        add_lowfreq(copy)
    return copy


def check_covers(model: torch.nn.Module, source: WeightSource, where: str) -> None:
    """Every tensor the model has, with the model's shape, is in ``source``; else one clear error."""
    entries = source.entries()
    expected = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(entries))
    if missing:
        raise ModelError(f"the weights in {where} lack {len(missing)} tensors of the model, e.g. {missing[:3]}; "
                         "is config.json the one these weights were saved with?")
    wrong = [f"{k}: {entries[k][1]} != {v}" for k, v in expected.items() if tuple(entries[k][1]) != v]
    if wrong:
        raise ModelError(f"the weights in {where} do not fit config.json: {wrong[:3]}")

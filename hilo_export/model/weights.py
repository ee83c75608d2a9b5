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
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import torch

from ..files import confined, read_limited, regular_file
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
        fix = "re-save the model (save_pretrained) or copy the whole model folder again"
        if index.exists() or index.is_symlink():
            weight_map = _weight_map(index, fix)
            # names stay inside the folder; links may lead out of it (a hub cache snapshot links to its blobs)
            self._shard_of = {key: confined(self.folder, name, ModelError, fix, where=index) for key, name in weight_map.items()}
        elif (self.folder / SINGLE_FILE).exists() or (self.folder / SINGLE_FILE).is_symlink():
            self._shard_of = None
        else:
            raise ModelError(
                f"{self.folder} holds no safetensors weights ({SINGLE_FILE} or {INDEX_FILE}); "
                "save the model with save_pretrained(..., safe_serialization=True)"
            )
        for path in self.files:  # before any is opened: a fifo would block, /dev/zero never end
            regular_file(path, ModelError, f"weights must be plain safetensors files: {fix}")
        self._entries = self._read_headers()
        # a distilled model's learned low-frequency embedding: one more file, with its own keys
        extra = self.folder / LOWFREQ_FILE
        self._extra = extra if extra.exists() or extra.is_symlink() else None  # known once, not per tensor
        if self._extra is not None:
            regular_file(self._extra, ModelError, f"weights must be plain safetensors files: {fix}")
            self._entries.update(self._headers(self._extra))

    @property
    def files(self) -> list[Path]:
        return sorted(set(self._shard_of.values())) if self._shard_of else [self.folder / SINGLE_FILE]

    def _read_headers(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        entries = {}
        for path in self.files:
            entries.update(self._headers(path))
        if self._shard_of is not None:
            missing = sorted(set(self._shard_of) - set(entries))
            if missing:
                raise ModelError(f"{INDEX_FILE} in {self.folder} names tensors no shard holds: {missing[:5]}; re-save the model")
        return entries

    @staticmethod
    def _headers(path: Path) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        entries = {}
        with _opened(path) as f:
            for key in f.keys():
                sliced = f.get_slice(key)
                entries[key] = (_torch_dtype(sliced.get_dtype(), key, path), tuple(sliced.get_shape()))
        return entries

    def entries(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        return dict(self._entries)

    def tensor(self, key: str) -> torch.Tensor:
        if key.startswith(LOWFREQ_PREFIX) and self._extra is not None:
            path = self._extra
        else:
            path = self._shard_of[key] if self._shard_of else self.folder / SINGLE_FILE
        with _opened(path) as f:
            return f.get_tensor(key).clone()  # clone: own storage, not a view of the mapping

    def sha256(self, keys: list[str]) -> str:
        """``tensors_sha256`` of the tensors ``keys`` (the model's state_dict order), one in memory at a time."""
        return tensors_sha256((key, self.tensor(key)) for key in keys)


# safetensors dtypes the exporter reads; floating ones are converted to the build precision (FP8
# checkpoints included). Others (F4, F6_*, F8_E8M0 scales, complex, wide unsigned) are refused by name.
_TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "F8_E4M3FNUZ": torch.float8_e4m3fnuz, "F8_E5M2FNUZ": torch.float8_e5m2fnuz,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
MAX_INDEX_BYTES = 64 << 20  # an index maps tensor names to shard names: megabytes even for the largest models


def _weight_map(index: Path, fix: str) -> dict[str, str]:
    raw = read_limited(index, MAX_INDEX_BYTES, ModelError, fix)
    try:
        weight_map = json.loads(raw.decode("utf-8"))["weight_map"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, RecursionError) as err:
        raise ModelError(f"{index} is not a safetensors index (no weight_map: {type(err).__name__}); {fix}") from None
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise ModelError(f"{index} is not a safetensors index (weight_map must map tensor names to file names); {fix}")
    return weight_map


@contextmanager
def _opened(path: Path):
    """``safe_open`` with its errors (a truncated file, a bad header, offsets past the end) named by file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            yield f
    except SafetensorError as err:
        raise ModelError(f"{path} is not a readable safetensors file ({err}); re-save or re-download it") from None
    except OSError as err:
        raise ModelError(f"cannot read {path} ({err.strerror or err}); re-save or re-download it") from None


def _torch_dtype(name: str, key: str, path: Path) -> torch.dtype:
    dtype = _TORCH_DTYPES.get(name)
    if dtype is None:
        raise ModelError(f"{path} stores tensor {key} as {name}, which hilo-export cannot convert (it reads "
                         f"{', '.join(_TORCH_DTYPES)}); save the weights in bf16, fp16 or fp32")
    return dtype


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
    unused = sorted(set(entries) - set(expected))
    if unused:
        # a config that builds a smaller model (num_layers: -3 builds none) would drop them silently
        raise ModelError(f"the weights in {where} hold {len(unused)} tensors the model of config.json does not use, "
                         f"e.g. {unused[:3]}; is config.json the one these weights were saved with?")
    wrong = [f"{k}: {entries[k][1]} != {v}" for k, v in expected.items() if tuple(entries[k][1]) != v]
    if wrong:
        raise ModelError(f"the weights in {where} do not fit config.json: {wrong[:3]}")

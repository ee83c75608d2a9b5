"""A learned low-frequency patch embedding, as the paper's HiLo fine-tuning brings.

A stock model embeds its low-frequency tokens (block means of the latent tokens) with its own
patch embedding (Flux: ``x_embedder``, a Linear). A distilled model adds a learned difference for
the first ``n_lowfreq`` tokens of the sequence: ``LowFreqPatchEmbed`` keeps the stock weight and
bias under their own names (so diffusers' keys are unchanged) and holds the difference as
``lowfreq_delta``. Stored as a difference, its zero start reproduces the stock output bit for bit.

On disk it is ``hilo_lowfreq.safetensors`` beside the transformer's weights, keyed as in the
model's ``state_dict`` (``x_embedder.lowfreq_delta.weight`` / ``.bias``); ``install`` loads it,
and ``ShardedWeights`` streams it into an export like any shard.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from ..files import regular_file
from .configs import ModelError

LOWFREQ_FILE = "hilo_lowfreq.safetensors"
EMBEDDER = "x_embedder"  # the patch embedding of every Flux transformer
PREFIX = f"{EMBEDDER}.lowfreq_delta."


class LowFreqPatchEmbed(torch.nn.Linear):
    """The stock patch embedding, plus a learned difference on the first ``n_lowfreq`` tokens."""

    n_lowfreq: int = 0  # set per call by ``lowfreq_tokens``; 0: every token is a full-resolution one

    @classmethod
    def from_linear(cls, stock: torch.nn.Linear) -> "LowFreqPatchEmbed":
        with torch.device("meta"):
            module = cls(stock.in_features, stock.out_features, bias=stock.bias is not None)
        module.weight = stock.weight
        module.bias = stock.bias
        delta = torch.nn.Linear(stock.in_features, stock.out_features, device=stock.weight.device, dtype=stock.weight.dtype)
        if stock.weight.device.type != "meta":
            torch.nn.init.zeros_(delta.weight)
            torch.nn.init.zeros_(delta.bias)
        module.lowfreq_delta = delta
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        n = self.n_lowfreq
        if n == 0:
            return out
        return torch.cat([out[:, :n] + self.lowfreq_delta(x[:, :n]), out[:, n:]], dim=1)

    def stock(self) -> torch.nn.Linear:
        """A plain Linear sharing the stock weight and bias (for saving in diffusers' format)."""
        with torch.device("meta"):
            linear = torch.nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        linear.weight = self.weight
        linear.bias = self.bias
        return linear


def has_lowfreq(model: torch.nn.Module) -> bool:
    return isinstance(getattr(model, EMBEDDER, None), LowFreqPatchEmbed)


def add_lowfreq(model: torch.nn.Module) -> LowFreqPatchEmbed:
    """Give ``model`` a learned low-frequency embedding (a zero difference: the output is unchanged)."""
    stock = getattr(model, EMBEDDER, None)
    if isinstance(stock, LowFreqPatchEmbed):
        return stock
    if not isinstance(stock, torch.nn.Linear):
        raise ModelError(f"{type(model).__name__} has no Linear {EMBEDDER}; a learned low-frequency embedding needs one")
    module = LowFreqPatchEmbed.from_linear(stock)
    setattr(model, EMBEDDER, module)
    return module


def install(model: torch.nn.Module, folder: Path) -> bool:
    """Load ``folder``'s learned low-frequency embedding into ``model``, if the folder has one."""
    path = Path(folder) / LOWFREQ_FILE
    if not path.exists() and not path.is_symlink():
        return False
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    fix = "re-run hilo-export distill, or remove it to use the stock embedding"
    regular_file(path, ModelError, f"the learned low-frequency embedding must be a plain safetensors file: {fix}")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as err:
        raise ModelError(f"{path} is not a readable safetensors file ({err}); {fix}") from None
    module = add_lowfreq(model)
    expected = {PREFIX + "weight": tuple(module.lowfreq_delta.weight.shape), PREFIX + "bias": tuple(module.lowfreq_delta.bias.shape)}
    found = {key: tuple(t.shape) for key, t in tensors.items()}
    if found != expected:
        raise ModelError(f"{path} holds {found}, not the low-frequency embedding of this model ({expected}); "
                         "it belongs to another model: re-run hilo-export distill")
    if module.weight.device.type != "meta":
        dtype = module.weight.dtype
        module.lowfreq_delta.weight.data.copy_(tensors[PREFIX + "weight"].to(dtype))
        module.lowfreq_delta.bias.data.copy_(tensors[PREFIX + "bias"].to(dtype))
    return True


def save(model: torch.nn.Module, folder: Path) -> Path:
    """Write ``model``'s learned low-frequency embedding beside its weights in ``folder``."""
    from safetensors.torch import save_file

    module = getattr(model, EMBEDDER)
    path = Path(folder) / LOWFREQ_FILE
    save_file({PREFIX + "weight": module.lowfreq_delta.weight.detach().contiguous(),
               PREFIX + "bias": module.lowfreq_delta.bias.detach().contiguous()}, str(path))
    return path


@contextmanager
def stock_embedder(model: torch.nn.Module) -> Iterator[None]:
    """The model with its plain patch embedding (diffusers' keys only), e.g. for ``save_pretrained``."""
    module = getattr(model, EMBEDDER)
    if not isinstance(module, LowFreqPatchEmbed):
        yield
        return
    setattr(model, EMBEDDER, module.stock())
    try:
        yield
    finally:
        setattr(model, EMBEDDER, module)


@contextmanager
def lowfreq_tokens(model: torch.nn.Module, n_lowfreq: int) -> Iterator[None]:
    """Within: the first ``n_lowfreq`` tokens of the sequence go through the learned embedding."""
    module = getattr(model, EMBEDDER, None)
    if not isinstance(module, LowFreqPatchEmbed) or n_lowfreq == 0:
        yield
        return
    module.n_lowfreq = n_lowfreq
    try:
        yield
    finally:
        module.n_lowfreq = 0

"""The build precisions, and numpy <-> torch for every engine dtype, bfloat16 included (numpy has
none: ml_dtypes provides it)."""

from __future__ import annotations

import ml_dtypes  # noqa: F401 - registers numpy's "bfloat16" dtype name, used by manifests
import numpy as np
import torch

# the build precisions, by the name manifests, the CLI and every backend use: the one table of them
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU numpy array of ``tensor`` (bfloat16 as ml_dtypes.bfloat16, same bits)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.contiguous().view(torch.uint16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def from_numpy(array: np.ndarray) -> torch.Tensor:
    if array.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(np.ascontiguousarray(array).view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(array)

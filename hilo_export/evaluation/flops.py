"""FLOPs of one DiT step at a given image-token count, counted by torch on the meta device (no weights).

Linear layers cost a + b*n and joint attention c*(n + text)^2, so a step's FLOPs are a
quadratic in the image-token count n: three counts fix it exactly and every other n is
evaluated from the fit (``StepFlops.check`` counts a fourth to prove it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..model.adapters import adapter_for

# Flux.1-dev's transformer (diffusers' FluxTransformer2DModel defaults, guidance-distilled)
FLUX1_DEV = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
)


@dataclass
class StepFlops:
    config: dict
    text_len: int
    coefficients: np.ndarray  # c0 + c1 n + c2 n^2

    @classmethod
    def count(cls, config: dict, text_len: int, sizes: tuple[int, int, int] = (256, 1024, 4096)) -> "StepFlops":
        model = _meta_model(config)
        counts = [_count(model, n, text_len) for n in sizes]
        coefficients = np.polyfit(np.array(sizes, np.float64), np.array(counts, np.float64), 2)[::-1]
        return cls(config, text_len, coefficients)

    def __call__(self, n_image_tokens: int) -> float:
        n = float(n_image_tokens)
        return float(self.coefficients[0] + self.coefficients[1] * n + self.coefficients[2] * n * n)

    def check(self, n_image_tokens: int) -> float:
        """Relative error of the fit against a direct count at ``n_image_tokens``."""
        exact = _count(_meta_model(self.config), n_image_tokens, self.text_len)
        return abs(self(n_image_tokens) - exact) / exact


def _meta_model(config: dict) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        return FluxTransformer2DModel(**config)


def _count(model: torch.nn.Module, n: int, text_len: int) -> int:
    # the inputs are the adapter's declared table, on an n-token grid; values do not change FLOPs
    shapes = adapter_for(model).input_shapes(model, batch=1, grid=(1, n), text_len=text_len)
    with torch.device("meta"):
        inputs = {name: torch.empty(shape) for name, shape in shapes.items()}
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(**inputs)
    return counter.get_total_flops()

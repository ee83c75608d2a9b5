"""Image fidelity inside a region: PSNR and SSIM on uint8 RGB images, as the paper reports them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .errors import EvaluationError, require_eval


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    """PSNR in dB over the pixels of ``region`` (bool [H, W]; None: all). Identical pixels: inf."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    if region is not None:
        if not region.any():
            raise EvaluationError("empty region: PSNR needs at least one pixel")
        diff = diff[region]
    mse = float((diff**2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    """Mean SSIM (scikit-image's: Gaussian window, sigma 1.5, per channel) over the pixels of ``region``."""
    metrics = require_eval("skimage.metrics", "SSIM")
    _, full = metrics.structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                            use_sample_covariance=False, data_range=255, full=True)
    ssim_map = full.mean(axis=2)  # mean over channels
    if region is not None:
        if not region.any():
            raise EvaluationError("empty region: SSIM needs at least one pixel")
        return float(ssim_map[region].mean())
    return float(ssim_map.mean())


def border_ring(mask: np.ndarray, width: int) -> np.ndarray:
    """The band of mask pixels within ``width`` px of its border: where seams would show."""
    inside = torch.from_numpy(mask > 0)[None, None].float()
    eroded = -F.max_pool2d(-inside, 2 * width + 1, stride=1, padding=width)
    return ((inside - eroded)[0, 0] > 0).numpy()


@dataclass
class Pooled:
    """Squared errors summed per comparison: one PSNR over all pixels compared."""

    sq: dict[str, float] = field(default_factory=dict)
    px: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, a: np.ndarray, b: np.ndarray, region: np.ndarray) -> None:
        diff = a[region].astype(np.float64) - b[region].astype(np.float64)
        self.sq[key] = self.sq.get(key, 0.0) + float((diff**2).sum())
        self.px[key] = self.px.get(key, 0) + diff.size

    def psnr(self, key: str) -> float | None:
        """None where nothing was compared or every compared pixel was equal (infinite PSNR)."""
        if not self.px.get(key):
            return None
        mse = self.sq[key] / self.px[key]
        return None if mse == 0 else 10 * math.log10(255.0**2 / mse)

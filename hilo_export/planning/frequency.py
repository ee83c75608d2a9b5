"""The frequency score: normalized Sobel magnitude per token, regionalized by a box filter.

Pure torch (and numpy for one correctly rounded square root).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# BT.601 luma weights in thousandths: integer weights keep the gray sums of uint8 pixels exact.
GRAY_WEIGHTS = (299, 587, 114)
_SOBEL_MAX = 4.0 * math.sqrt(2.0)
_STRIP_BYTES = 1 << 20


# The score is computed with one fixed sequence of elementwise float32 operations (no fused
# multiply-adds such as addcmul, no reductions of unspecified order), so that the ONNX planner
# (onnx_planner.py), which repeats the sequence op for op, ranks tokens bit for bit the same.


def frequency_map(image: torch.Tensor, token_size: int, samples: int | None) -> torch.Tensor:
    """float32 [h, w]: mean normalized Sobel magnitude over each token."""
    stride = analysis_stride(token_size, samples)
    height, width, _ = image.shape
    h, w = height // token_size, width // token_size
    per_token = token_size // stride
    scores = torch.empty(h, w)
    # Strips of about 1 MiB of pixels keep temporaries small enough for the allocator to recycle:
    # whole-image temporaries cost more in page faults than in arithmetic.
    step = max(1, _STRIP_BYTES // (width * 3 * token_size))
    for first in range(0, h, step):
        last = min(h, first + step)
        # one analysis sample of context above and below; replicated at the image border
        top = max(0, first * token_size - stride)
        bottom = min(height, last * token_size + stride)
        gray = _box_gray(image[top:bottom], stride)
        pad_top, pad_bottom = int(first == 0), int(last == h)
        gray = F.pad(gray[None, None], (1, 1, pad_top, pad_bottom), mode="replicate")[0, 0]
        scores[first:last] = _pooled_sobel(gray, per_token)
    return scores / score_scale(token_size, samples, image.dtype == torch.uint8)


def score_scale(token_size: int, samples: int | None, uint8: bool) -> float:
    """What a token's summed Sobel magnitude is divided by to lie in [0, 1]: samples per token,
    the largest Sobel magnitude, and the gray scale of ``_box_gray`` (white = 1000 x stride^2,
    x 255 for uint8 pixels)."""
    stride = analysis_stride(token_size, samples)
    per_token = token_size // stride
    white = sum(GRAY_WEIGHTS) * stride * stride * (255 if uint8 else 1)
    return per_token * per_token * _SOBEL_MAX * white


def _pooled_sobel(padded: torch.Tensor, per_token: int) -> torch.Tensor:
    """Sum of Sobel magnitudes over each per_token x per_token cell of a 1-padded gray strip."""
    # Sobel as separable differences and [1, 2, 1] smoothing: fewer passes than a 3x3 conv.
    # (a + c) + 2b rounds the same whether or not the add is fused: 2b is exact.
    dx = padded[:, 2:] - padded[:, :-2]
    gx = torch.add(dx[:-2], dx[2:]).add_(dx[1:-1], alpha=2)
    dy = padded[2:] - padded[:-2]
    gy = torch.add(dy[:, :-2], dy[:, 2:]).add_(dy[:, 1:-1], alpha=2)
    # gx^2 and gy^2 rounded separately, then added: addcmul_ would fuse them (one rounding
    # fewer) on CPUs with FMA, and ONNX has no such op
    squared = gx.mul_(gx).add_(gy.mul_(gy)).numpy()  # in place: torch.hypot is slower here
    # numpy's square root is the correctly rounded IEEE one (as ONNX Runtime's); torch's
    # vectorized one is not on every CPU (off by an ulp on AVX-512 machines)
    magnitude = torch.from_numpy(np.sqrt(squared, out=squared))
    rows, cols = magnitude.shape
    h, w = rows // per_token, cols // per_token
    # summed left to right in a fixed order (torch.sum's order depends on the vector width)
    return _sum_along(_sum_along(magnitude.view(h, per_token, cols), 1).view(h, w, per_token), 2)


def regional_mean(score: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of each (2r+1)^2 token window that lies inside the grid (avg_pool2d with
    count_include_pad=False, summed window by window in row-major order)."""
    if radius == 0:
        return score
    h, w = score.shape
    size = 2 * radius + 1
    padded = F.pad(score, (radius, radius, radius, radius))  # zeros: adding 0 changes no sum
    total = padded[:h, :w].clone()
    for dy in range(size):
        for dx in range(size):
            if dy or dx:
                total.add_(padded[dy : dy + h, dx : dx + w])
    return total / window_counts((h, w), radius)


def window_counts(grid: tuple[int, int], radius: int) -> torch.Tensor:
    """float32 [h, w]: how many grid tokens the window of radius ``radius`` around each token covers."""

    def axis(n: int) -> torch.Tensor:
        i = torch.arange(n)
        return torch.clamp(i + radius, max=n - 1) - torch.clamp(i - radius, min=0) + 1

    return (axis(grid[0])[:, None] * axis(grid[1])[None, :]).float()


def analysis_stride(token_size: int, samples: int | None) -> int:
    """Pixels per analysis sample along a side: token_size // samples when that divides evenly."""
    if samples is None or samples >= token_size or token_size % samples:
        return 1
    return token_size // samples


def _box_gray(image: torch.Tensor, stride: int) -> torch.Tensor:
    """float32 [H/stride, W/stride]: BT.601 gray summed over stride x stride blocks, in units
    where a white pixel is 1000 (x 255 for uint8): 299 R + 587 G + 114 B."""
    height, width, _ = image.shape
    # Summing uint8 in int16 (exact up to 11 x 11 blocks) is the cheapest pass over the
    # full-resolution pixels; everything after it runs on the smaller grid.
    uint8 = image.dtype == torch.uint8
    acc = (torch.int16 if stride <= 11 else torch.int32) if uint8 else torch.float32
    pixels = image.to(acc).reshape(height // stride, stride, width * 3)
    rows = _sum_along(pixels, 1)
    summed = _sum_along(rows.view(height // stride, width // stride, stride, 3), 2)
    red, green, blue = GRAY_WEIGHTS
    white = 255 * sum(GRAY_WEIGHTS) * stride * stride
    if uint8 and white >= 2**24:
        # integer weights: the gray sum is exact (int64 beyond what int32 holds), rounded
        # once when it becomes float32
        summed = summed.to(torch.int32 if white < 2**31 else torch.int64)
        return (summed[..., 0] * red + summed[..., 1] * green + summed[..., 2] * blue).float()
    # below 2^24 (blocks up to 8 x 8) every product and sum of uint8 sums is an integer that
    # float32 holds exactly, fused or not: the cheaper float path gives the exact gray sum
    gray = summed[..., 0] * float(red)
    return gray.add_(summed[..., 1], alpha=green).add_(summed[..., 2], alpha=blue)


def _sum_along(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum over a short axis with elementwise adds, left to right (much faster here than a
    strided reduction, and its rounding does not depend on the machine)."""
    parts = x.unbind(dim)
    if len(parts) == 1:
        return parts[0]
    total = parts[0] + parts[1]
    for part in parts[2:]:
        total += part
    return total

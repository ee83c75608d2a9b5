"""Planner inputs: checking images and masks, and pooling the mask to the token grid.

Pure torch. ``token_mask`` turns a pixel mask into the planner's token mask: optionally an
opening of the pixels (erode, then dilate, by a square of radius ``open_px``: specks and hairlines
thinner than ``2 * open_px + 1`` pixels vanish), a pixel-level growth by ``grow_px``, the pooling
(a token is in the mask once at least ``min_pixels`` of its pixels are; 1: any pixel), and a
whole-token dilation by a square neighbourhood.
"""

from __future__ import annotations

import math
import operator
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import HiLoError

# Pixels per token side when none is given: Flux's (VAE factor 8 x patch 2), the family this
# toolchain targets. The API, plan and calibrate share it; a built folder carries its own (the
# reference model's is 8) and plan --engines uses that.
DEFAULT_TOKEN_SIZE = 16


class PlanError(HiLoError, ValueError):
    """An input the planner cannot plan; the message says how to fix it."""


def as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise PlanError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise PlanError(f"{what} must be an integer, got {value!r}") from None


def dilate(tokens: torch.Tensor, radius: int) -> torch.Tensor:
    if radius == 0:
        return tokens
    return F.max_pool2d(tokens[None, None].float(), 2 * radius + 1, 1, radius)[0, 0] > 0


def erode(pixels: torch.Tensor, radius: int) -> torch.Tensor:
    """bool [H, W]: pixels whose whole (2r+1)^2 square lies in the mask. Outside the image counts
    as in the mask (max pooling ignores padding, in torch and ONNX alike), so a mask touching the
    border is not eaten from outside the picture."""
    if radius == 0:
        return pixels
    return ~(F.max_pool2d((~pixels)[None, None].float(), 2 * radius + 1, 1, radius)[0, 0] > 0)


def token_mask(mask: torch.Tensor, token_size: int, open_px: int = 0, grow_px: int = 0, min_pixels: int = 1,
               dilation: int = 0) -> tuple[torch.Tensor, int]:
    """bool [h, w]: the planner's mask tokens (see the module docstring); and the number of mask pixels
    of the mask as given (before cleanup: the edit still covers every one of them)."""
    if open_px == 0 and grow_px == 0 and min_pixels == 1:
        tokens, n_pixels = pool_mask(mask, token_size)  # the common path: no float copy of the pixels
        return dilate(tokens, dilation), n_pixels
    pixels = mask >= 128 if mask.dtype == torch.uint8 else mask
    n_pixels = int(torch.count_nonzero(pixels))
    pixels = dilate(dilate(erode(pixels, open_px), open_px), grow_px)
    height, width = pixels.shape
    h, w = height // token_size, width // token_size
    counts = pixels.reshape(h, token_size, w, token_size).sum(dim=(1, 3), dtype=torch.int32)
    return dilate(counts >= min_pixels, dilation), n_pixels


def positive_token_size(token_size: Any) -> int:
    token_size = as_int(token_size, "token_size")
    if token_size < 1:
        raise PlanError(f"token_size must be a positive number of pixels, got {token_size}")
    return token_size


def token_grid(height: int, width: int, token_size: int) -> tuple[int, int]:
    if height == 0 or width == 0:
        raise PlanError(f"image is {width}x{height}: it has no pixels")
    if height % token_size or width % token_size:
        def near(n: int) -> str:
            down = n // token_size * token_size
            return f"{down} or {down + token_size}" if down else f"{token_size}"

        raise PlanError(
            f"image is {width}x{height}, but both sides must be multiples of the token size {token_size}: "
            f"resize or crop to a width of {near(width)} and a height of {near(height)}"
        )
    return height // token_size, width // token_size


def to_tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        array = np.ascontiguousarray(np.asarray(value))
    except (TypeError, ValueError) as err:
        raise PlanError(f"{what} must be a numpy array, torch tensor or PIL image; got {type(value).__name__}") from err
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise PlanError(f"{what} must hold numbers; got a {type(value).__name__} of dtype {array.dtype}")
    with warnings.catch_warnings():
        # read-only arrays (e.g. from PIL) are fine: the planner never writes to its inputs
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def as_image(image: Any) -> torch.Tensor:
    """uint8 or float [H, W, 3] as given (no copy for uint8); checked."""
    t = to_tensor(image, "image")
    if t.ndim != 3 or t.shape[2] != 3:
        raise PlanError(f"image must be H x W x 3 (RGB, channels last); got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t
    if not t.is_floating_point():
        raise PlanError(f"image dtype {t.dtype} is not supported: pass uint8 (0-255) or float in [0, 1]")
    t = t.float()
    lo, hi = (float(v) for v in torch.aminmax(t))  # NaN propagates into both: one pass checks all
    if math.isnan(lo) or math.isnan(hi):
        raise PlanError("image contains NaN values; clean the image before planning")
    if lo < 0.0 or hi > 1.0:
        raise PlanError(f"float image values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]; for 0-255 data pass uint8 or divide by 255")
    return t


def as_mask(mask: Any) -> torch.Tensor:
    """[H, W] bool, or uint8 read as 0/255 (binarized later at 128: cheaper than a bool copy)."""
    t = to_tensor(mask, "mask")
    if t.ndim == 3 and t.shape[2] == 1:
        t = t[..., 0]
    if t.ndim != 2:
        raise PlanError(f"mask must be H x W (one channel); got shape {tuple(t.shape)}")
    if t.dtype in (torch.bool, torch.uint8):
        if t.dtype == torch.uint8 and int(t.max()) == 1:
            raise PlanError("uint8 mask holds only 0 and 1, but uint8 masks are read as 0/255; pass it as bool or multiply by 255")
        return t
    if t.is_floating_point():
        if not torch.isfinite(t).all():
            raise PlanError("mask contains NaN or infinite values; pass a mask of 0/1 floats, bool or uint8 0/255")
        lo, hi = (float(v) for v in torch.aminmax(t))
        if lo < 0.0 or hi > 1.0:
            # a 0-255 float mask would mark a background of 20 as masked: refuse, never guess the scale
            raise PlanError(f"float mask values must lie in [0, 1] (binarized at 0.5), got [{lo:.3g}, {hi:.3g}]; "
                            "for 0-255 data pass uint8 or divide by 255")
        return t >= 0.5
    raise PlanError(f"mask dtype {t.dtype} is not supported: pass bool, uint8 (0/255) or float (binarized at 0.5)")


def pool_mask(mask: torch.Tensor, token_size: int) -> tuple[torch.Tensor, int]:
    """bool [h, w]: tokens with any pixel in the mask; and the number of mask pixels."""
    height, width = mask.shape
    h, w = height // token_size, width // token_size
    peak = mask.reshape(h, token_size, width).amax(dim=1).view(h, w, token_size).amax(dim=2)
    if mask.dtype == torch.uint8:
        # a uint8 pixel is in the mask when its top bit is set (value >= 128)
        return peak >= 128, int(torch.count_nonzero(mask >> 7))
    return peak, int(torch.count_nonzero(mask))

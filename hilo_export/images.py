"""Reading image and mask files into the 8-bit arrays the planner and pipelines take.

Pillow's ``convert("RGB")``/``convert("L")`` clips 16-bit and 32-bit pixels to 255 instead of
scaling them (a 16-bit photo becomes almost white); here they are scaled to 8 bits, and data
whose range cannot be known (float pixels outside [0, 1]) is refused with the fix. Pillow's
decompression-bomb guard stays on and becomes a clear error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import HiLoError


class ImageReadError(HiLoError, ValueError):
    """A file that cannot be read as an image; the message says what to do."""


def read_rgb(path: str | Path) -> np.ndarray:
    """uint8 [H, W, 3] of an image file of any bit depth Pillow reads."""
    return _read(path, "RGB")


def read_gray(path: str | Path) -> np.ndarray:
    """uint8 [H, W] of a (mask) image file of any bit depth Pillow reads."""
    return _read(path, "L")


def _read(path: str | Path, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return _to_8bit(image, mode, path)
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{path} is too large to decode safely ({err}); resize it below "
                             f"{Image.MAX_IMAGE_PIXELS} pixels") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ImageReadError(f"cannot read {path}: {err}") from None


def _to_8bit(image, mode: str, path) -> np.ndarray:
    from PIL import Image

    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # one-channel 16/32-bit integer or float pixels: scale, never clip
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
                raise ImageReadError(
                    f"{path} holds float pixels in [{np.nanmin(values):.3g}, {np.nanmax(values):.3g}]; "
                    "only floats in [0, 1] have a known scale: save it as 8- or 16-bit, or as floats in [0, 1]"
                )
            scaled = values * 255
        else:
            if values.min() < 0 or values.max() > 65535:
                raise ImageReadError(f"{path} holds {image.mode} pixels outside 0-65535; save it as an 8- or 16-bit image")
            scaled = values / 257  # 65535 -> 255, 257 -> 1: the 16-bit scale
        gray = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
        return np.asarray(gray.convert(mode))
    return np.asarray(image.convert(mode))

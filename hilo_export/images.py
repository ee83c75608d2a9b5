"""Reading image and mask files into the 8-bit arrays the planner and pipelines take.

Pillow's ``convert("RGB")``/``convert("L")`` clips 16-bit and 32-bit pixels to 255 instead of
scaling them (a 16-bit photo becomes almost white); here they are scaled to 8 bits, and data
whose range cannot be known (float pixels outside [0, 1], NaN) is refused with the fix. Masks
of more than 8 bits holding 0 and one other value are label masks (0/1 included), and a mask
with transparency may keep its mask in the alpha channel (``_alpha_mask``). Pillow's
decompression-bomb guard stays on and becomes a clear error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import HiLoError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class ImageReadError(HiLoError, ValueError):
    """A file that cannot be read as an image; the message says what to do."""


def image_files(folder: str | Path, depth: int | None = 0) -> list[Path]:
    """The image files (by suffix, hidden ones left out) in ``folder`` and ``depth`` levels of
    subfolders below it (None: every level); the folder's own first, then by path."""
    folder = Path(folder)

    def level(path: Path) -> int:
        return len(path.relative_to(folder).parts) - 1

    # glob level by level: a depth-limited listing never walks the tree below it
    found = folder.rglob("*") if depth is None else (p for d in range(depth + 1) for p in folder.glob("/".join(["*"] * (d + 1))))
    return sorted((p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()),
                  key=lambda p: (level(p), str(p)))


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

    if mode == "L" and _has_alpha(image):
        return _alpha_mask(image, path)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # one-channel 16/32-bit integer or float pixels: scale, never clip
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ImageReadError(f"{path} holds NaN or infinite pixels; save it without them (8- or 16-bit, or floats in [0, 1])")
        if image.mode == "F":
            if values.min() < 0 or values.max() > 1:
                raise ImageReadError(
                    f"{path} holds float pixels in [{values.min():.3g}, {values.max():.3g}]; "
                    "only floats in [0, 1] have a known scale: save it as 8- or 16-bit, or as floats in [0, 1]"
                )
            scaled = values * 255
        else:
            if values.min() < 0 or values.max() > 65535:
                raise ImageReadError(f"{path} holds {image.mode} pixels outside 0-65535; save it as an 8- or 16-bit image")
            if mode == "L" and _two_levels(values):
                # a label mask (0 and one other value, 0/1 included): the other value marks the mask,
                # whatever the bit depth (scaling 1/65535 to 8 bits would make it empty)
                return np.where(values > 0, 255, 0).astype(np.uint8)
            scaled = values / 257  # 65535 -> 255, 257 -> 1: the 16-bit scale
        gray = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
        return np.asarray(gray.convert(mode))
    return np.asarray(image.convert(mode))


def _two_levels(values: np.ndarray) -> bool:
    levels = np.unique(values)
    return len(levels) == 2 and levels[0] == 0


def _has_alpha(image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)


def _alpha_mask(image, path) -> np.ndarray:
    """A mask with transparency. Opaque everywhere: its gray levels are the mask, as usual. A uniform
    colour with varying alpha (a brush stroke on a transparent layer): the alpha is the mask. Both
    varying: the colour where it is painted, nothing where it is transparent (composited on black)."""
    rgba = np.asarray(image.convert("RGBA"))
    alpha = rgba[..., 3]
    gray = np.asarray(image.convert("RGB").convert("L"))
    if alpha.min() == 255:
        return gray
    if gray.min() == gray.max():
        return alpha.copy()
    return (gray.astype(np.uint16) * alpha // 255).astype(np.uint8)

"""Training batches: crops of any folder of images, with masks of the three traffic categories.

No paired data is needed: the teacher's dense prediction is the target. The masks come from a
sampler the caller passes (the mask suite's, ``evaluation.masks.sample_mask``), so that this stage
needs nothing from evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..images import IMAGE_SUFFIXES, image_files
from .student import TrainError

CATEGORIES = ("small", "medium", "large")
# (width, height), category, generator -> uint8 [H, W] mask, 255 = edit
MaskSampler = Callable[[tuple[int, int], str, np.random.Generator], np.ndarray]


def read_images(folder: Path, size: int) -> list[np.ndarray]:
    """Every image in ``folder`` (and below) as uint8 RGB, scaled so its shorter side is at least ``size``
    and at most twice it (crops then see a useful share of the picture, and memory stays bounded)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainError(f"--images {folder} is not a folder; pass a folder of images (any photos will do)")
    paths = image_files(folder, depth=None)
    images = []
    for path in paths:
        try:
            image = Image.open(path).convert("RGB")
        except OSError as err:
            raise TrainError(f"cannot read {path} ({err}); remove it from {folder}") from None
        short = min(image.size)
        scale = max(size / short, min(1.0, 2 * size / short))
        if scale != 1.0:
            image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                                 Image.Resampling.LANCZOS)
        images.append(np.asarray(image))
    if not images:
        raise TrainError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)}); add some photos")
    return images


def random_crop(images: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``size`` x ``size`` crop of a random image, mirrored half the time."""
    image = images[int(rng.integers(len(images)))]
    top = int(rng.integers(image.shape[0] - size + 1))
    left = int(rng.integers(image.shape[1] - size + 1))
    crop = image[top:top + size, left:left + size]
    return np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop)


def draw_batch(images: list[np.ndarray], size: int, batch: int, category: str, masks: MaskSampler,
               rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    crops = [random_crop(images, size, rng) for _ in range(batch)]
    drawn = [np.asarray(masks((size, size), category, rng)) for _ in range(batch)]
    return crops, drawn


def to_tensors(images: list[np.ndarray], masks: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels float [B, 3, H, W] in [-1, 1], holes float [B, 1, H, W], 1 = edit)."""
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    holes = torch.from_numpy((np.stack(masks) > 0).astype(np.float32))[:, None]
    return pixels, holes

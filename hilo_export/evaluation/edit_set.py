"""The edits a pipeline bench runs: the user's images, masks and prompts, at the engines' size.

Images come from a folder (default: the bundled evaluation photos); masks from a folder of the
user's masks (and its subfolders, one level down), binned into small / medium / large by mask ratio (``CATEGORY_LIMITS``: the
midpoints between the paper's category means), or from the seeded suite. A mask whose file
name matches an image's (``cat.png``, or ``cat_mask.png`` / ``cat-mask.png``) edits that image;
the others take the images in turn. Everything is resized to the engines' resolution as
diffusers' Fill pipeline resizes its inputs (Lanczos; the mask binarized at 0.5), and the
bench says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ..images import IMAGE_SUFFIXES, ImageReadError, image_files, read_gray, read_rgb
from ..planning.plan import mask_from_file
from .masks import CATEGORY_RATIOS, mask_suite
from .settings import EVAL_IMAGES, BenchError, eval_image_path

log = logging.getLogger(__name__)

_means = list(CATEGORY_RATIOS.values())
# [low, high) mask ratio of each category: halfway between the paper's category means
CATEGORY_LIMITS = {
    "small": (0.0, round((_means[0] + _means[1]) / 2, 4)),
    "medium": (round((_means[0] + _means[1]) / 2, 4), round((_means[1] + _means[2]) / 2, 4)),
    "large": (round((_means[1] + _means[2]) / 2, 4), 1.0),
}
SUITE = "suite"


@dataclass
class EditCase:
    """One edit: an image and a mask at the engines' resolution, its category and prompt."""

    name: str
    category: str
    image_name: str
    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray  # bool [H, W], True = edit
    prompt: str
    source_size: tuple[int, int] | None = None  # (width, height) before resizing; None: already the engines' size

    @property
    def mask_ratio(self) -> float:
        return float(self.mask.mean())


def category_of(ratio: float) -> str:
    for name, (low, high) in CATEGORY_LIMITS.items():
        if low <= ratio < high:
            return name
    return "large"


def resize_like_pipeline(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [H, W, 3] and bool [H, W] at ``size`` = (width, height), as diffusers' ``VaeImageProcessor``
    resizes a Fill pipeline's inputs: Lanczos for both, the mask then binarized at 0.5."""
    if (image.shape[1], image.shape[0]) != tuple(size):
        image = np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))
    gray = np.where(np.asarray(mask) > (0 if mask.dtype == bool else 127), 255, 0).astype(np.uint8)
    if (gray.shape[1], gray.shape[0]) != tuple(size):
        gray = np.asarray(Image.fromarray(gray).resize(size, Image.LANCZOS))
    return image, gray >= 128


def photo_files(folder: Path | None) -> list[Path]:
    """The image files of ``folder`` (sorted by name), or the bundled evaluation photos."""
    if folder is None:
        return [eval_image_path(name) for name in EVAL_IMAGES]
    files = _files(folder)
    if not files:
        raise BenchError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)}); give --images a folder of photos")
    return files


def read_prompts(prompt: str, prompts_file: Path | None, n_images: int) -> list[str]:
    """One prompt per image: ``prompts_file`` (one line per image, in the images' name order) or ``prompt`` for all."""
    if prompts_file is None:
        return [prompt] * n_images
    if prompt:
        raise BenchError("give --prompt or --prompts, not both")
    lines = [line.strip() for line in Path(prompts_file).read_text().splitlines() if line.strip()]
    if len(lines) != n_images:
        raise BenchError(f"{prompts_file} has {len(lines)} prompts for {n_images} images: write one line per image, "
                         "in the images' name order")
    return lines


def load_cases(images: Path | None, masks: Path | str, prompts: Sequence[str], size: tuple[int, int], per_category: int,
               progress: Callable[[str], None] = log.info) -> list[EditCase]:
    """Every edit of the bench, each category's in order (``per_category``: suite masks drawn per category)."""
    paths = photo_files(images)
    if len(prompts) != len(paths):
        raise BenchError(f"{len(prompts)} prompts for {len(paths)} images")
    pictures = [_read_image(p) for p in paths]
    resized = sorted({f"{p.name} ({a.shape[1]}x{a.shape[0]})" for p, a in zip(paths, pictures)
                      if (a.shape[1], a.shape[0]) != tuple(size)})
    cases = []
    if masks == SUITE:
        for i, item in enumerate(mask_suite(size, per_category, seed=1)):  # seed 1: not the planning suite of bench
            k = i % len(paths)
            image, mask = resize_like_pipeline(pictures[k], item.mask > 0, size)
            cases.append(EditCase(f"{item.name}@{paths[k].stem}", item.category, paths[k].name, image, mask, prompts[k],
                                  _source(pictures[k], size)))
    else:
        files = _files(Path(masks), subfolders=True)
        if not files:
            raise BenchError(f"no mask images in {masks} (looked for {', '.join(IMAGE_SUFFIXES)}); give --masks a folder "
                             "of masks (white = edit), or --masks suite")
        by_stem = {p.stem: k for k, p in enumerate(paths)}
        for i, path in enumerate(files):
            k = by_stem.get(_image_stem(path.stem), i % len(paths))
            raw = _read_mask(path)
            if raw.shape[:2] != pictures[k].shape[:2]:
                resized.append(f"mask {path.name} ({raw.shape[1]}x{raw.shape[0]})")
            image, mask = resize_like_pipeline(pictures[k], raw, size)
            if not mask.any():
                progress(f"note: mask {path.name} is empty at {size[0]}x{size[1]}; left out")
                continue
            cases.append(EditCase(f"{path.stem}@{paths[k].stem}", category_of(float(mask.mean())), paths[k].name, image,
                                  mask, prompts[k], _source(pictures[k], size)))
        if not cases:
            raise BenchError(f"every mask in {masks} is empty: paint the regions to edit white")
    if resized:
        progress(f"resized to the engines' {size[0]}x{size[1]} as the pipeline does (Lanczos; masks binarized at 0.5): "
                 + ", ".join(resized))
    counts = {name: sum(c.category == name for c in cases) for name in CATEGORY_LIMITS}
    progress("edits per category: " + ", ".join(
        f"{name} {counts[name]} (mask ratio {lo:.1%}-{hi:.1%})" for name, (lo, hi) in CATEGORY_LIMITS.items()))
    return cases


def _files(folder: Path, subfolders: bool = False) -> list[Path]:
    """Image files in ``folder`` (and, with ``subfolders``, one level down, as ``hilo-export masks`` writes them)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchError(f"{folder} is not a folder")
    return image_files(folder, depth=1 if subfolders else 0)


def _image_stem(stem: str) -> str:
    for suffix in ("_mask", "-mask", ".mask"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _source(picture: np.ndarray, size: tuple[int, int]) -> tuple[int, int] | None:
    return None if (picture.shape[1], picture.shape[0]) == tuple(size) else (picture.shape[1], picture.shape[0])


def _read_image(path: Path) -> np.ndarray:
    try:
        return read_rgb(path)
    except ImageReadError as err:
        raise BenchError(f"cannot read image: {err}") from None


def _read_mask(path: Path) -> np.ndarray:
    try:
        return np.asarray(mask_from_file(read_gray(path)))
    except ImageReadError as err:
        raise BenchError(f"cannot read mask: {err}") from None

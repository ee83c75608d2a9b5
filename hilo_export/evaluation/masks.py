"""Seeded procedural edit masks: the shapes and sizes of real editing traffic.

Four shapes, in the paper's traffic mix: scattered blobs (55%), elongated brush strokes
(34%), squares (8%) and irregular polygons (3%). Each mask is grown until it covers its
target fraction of the image, so a category's mean mask ratio lands on the paper's figure.
Drawn with PIL at the requested resolution; 255 = edit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .errors import EvaluationError

SHAPES = ("scattered", "elongated", "square", "irregular")
SHAPE_MIX = {"scattered": 0.55, "elongated": 0.34, "square": 0.08, "irregular": 0.03}
# the paper's average mask ratio per category
CATEGORY_RATIOS = {"small": 0.0638, "medium": 0.1592, "large": 0.3536}
# each mask's own target is spread around the category mean by this factor
RATIO_SPREAD = 0.4


@dataclass(frozen=True)
class SuiteMask:
    category: str
    index: int
    shape: str
    target_ratio: float
    mask: np.ndarray  # uint8 [H, W], 255 = edit

    @property
    def ratio(self) -> float:
        return float((self.mask > 0).mean())

    @property
    def name(self) -> str:
        return f"{self.category}-{self.index:03d}-{self.shape}"


def shape_counts(n: int) -> dict[str, int]:
    """How many of ``n`` masks get each shape: the traffic mix, by largest remainder."""
    exact = {shape: SHAPE_MIX[shape] * n for shape in SHAPES}
    counts = {shape: int(value) for shape, value in exact.items()}
    by_remainder = sorted(SHAPES, key=lambda s: (counts[s] - exact[s], SHAPES.index(s)))
    for shape in by_remainder[: n - sum(counts.values())]:
        counts[shape] += 1
    return counts


def mask_suite(size: tuple[int, int], per_category: int = 32, seed: int = 0,
               categories: tuple[str, ...] = tuple(CATEGORY_RATIOS)) -> list[SuiteMask]:
    """``per_category`` masks for each category at ``size`` = (width, height), reproducible from ``seed``."""
    if per_category < 1:
        raise EvaluationError("per_category must be at least 1")
    unknown = set(categories) - set(CATEGORY_RATIOS)
    if unknown:
        raise EvaluationError(f"unknown mask categories {sorted(unknown)}; choose from {list(CATEGORY_RATIOS)}")
    suite = []
    for category in categories:
        # seeded by the category's fixed index: a category's masks do not depend on which others are asked for
        rng = np.random.default_rng([seed, list(CATEGORY_RATIOS).index(category)])
        shapes = [shape for shape, count in shape_counts(per_category).items() for _ in range(count)]
        rng.shuffle(shapes)
        targets = _targets(CATEGORY_RATIOS[category], per_category, rng)
        for i, (shape, target) in enumerate(zip(shapes, targets)):
            suite.append(SuiteMask(category, i, shape, float(target), draw_mask(shape, size, target, rng)))
    return suite


def _targets(mean: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n targets spread around ``mean`` whose average is exactly ``mean``."""
    spread = rng.uniform(1 - RATIO_SPREAD, 1 + RATIO_SPREAD, n)
    return mean * spread / spread.mean()


def random_mask(size: tuple[int, int], rng: np.random.Generator, max_ratio: float = 0.5) -> np.ndarray:
    """One mask of a random shape and size (for training): 255 = edit."""
    shape = rng.choice(SHAPES, p=[SHAPE_MIX[s] for s in SHAPES])
    return draw_mask(str(shape), size, float(rng.uniform(0.02, max_ratio)), rng)


def sample_mask(size: tuple[int, int], category: str, rng: np.random.Generator) -> np.ndarray:
    """One mask of ``category`` at ``size`` = (width, height), drawn as the suite draws them: a shape from
    the traffic mix and a target spread around the category's mean ratio (for training): 255 = edit."""
    if category not in CATEGORY_RATIOS:
        raise EvaluationError(f"unknown mask category {category!r}; choose from {list(CATEGORY_RATIOS)}")
    shape = str(rng.choice(SHAPES, p=[SHAPE_MIX[s] for s in SHAPES]))
    target = CATEGORY_RATIOS[category] * rng.uniform(1 - RATIO_SPREAD, 1 + RATIO_SPREAD)
    return draw_mask(shape, size, float(target), rng)


def draw_mask(shape: str, size: tuple[int, int], target: float, rng: np.random.Generator) -> np.ndarray:
    if shape not in SHAPES:
        raise EvaluationError(f"unknown mask shape {shape!r}; choose from {list(SHAPES)}")
    if not 0 < target < 1:
        raise EvaluationError(f"target mask ratio must be in (0, 1); got {target}")
    return {"scattered": _scattered, "elongated": _elongated, "square": _square, "irregular": _irregular}[shape](
        size, target, rng
    )


def _canvas(size):
    image = Image.new("L", size, 0)
    return image, ImageDraw.Draw(image)


def _coverage(image: Image.Image) -> float:
    return float((np.asarray(image) > 0).mean())


def _grow(size, target, rng, add) -> np.ndarray:
    """Add primitives until the mask covers ``target``; the last one is shrunk to land close."""
    image, draw = _canvas(size)
    for _ in range(10_000):
        before = image.copy()
        add(draw, 1.0)
        if _coverage(image) >= target:
            over = _coverage(image) - target
            if over > 0.004:  # redo the last primitive smaller, keeping the closer of the two
                trial = before.copy()
                add(ImageDraw.Draw(trial), 0.5)
                if abs(_coverage(trial) - target) < over:
                    image = trial
            break
    return (np.asarray(image) > 0).astype(np.uint8) * 255


def _scattered(size, target, rng):
    w, h = size
    unit = math.sqrt(w * h)
    radius_range = (0.02 * unit, max(0.02 * unit + 1, math.sqrt(target) * 0.18 * unit))

    def add(draw, scale):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(*radius_range) * scale
        for _ in range(3):  # a blob: a few overlapping ellipses
            dx, dy = rng.normal(0, r * 0.4, 2)
            rx, ry = r * rng.uniform(0.6, 1.1), r * rng.uniform(0.6, 1.1)
            draw.ellipse([cx + dx - rx, cy + dy - ry, cx + dx + rx, cy + dy + ry], fill=255)

    return _grow(size, target, rng, add)


def _elongated(size, target, rng):
    w, h = size
    unit = math.sqrt(w * h)
    width = max(2, int(unit * rng.uniform(0.03, 0.06) * (1 + 3 * target)))

    def add(draw, scale):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        angle = rng.uniform(0, 2 * math.pi)
        points = [(x, y)]
        for _ in range(int(rng.integers(2, 6))):
            angle += rng.normal(0, 0.6)
            step = rng.uniform(0.08, 0.25) * unit * scale
            x, y = x + step * math.cos(angle), y + step * math.sin(angle)
            points.append((x, y))
        stroke = max(2, int(width * scale))
        draw.line(points, fill=255, width=stroke, joint="curve")
        for px, py in points:  # round caps
            draw.ellipse([px - stroke / 2, py - stroke / 2, px + stroke / 2, py + stroke / 2], fill=255)

    return _grow(size, target, rng, add)


def _square(size, target, rng):
    w, h = size
    side = min(math.sqrt(target * w * h), w, h)
    x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
    image, draw = _canvas(size)
    draw.rectangle([x0, y0, x0 + side - 1, y0 + side - 1], fill=255)
    return (np.asarray(image) > 0).astype(np.uint8) * 255


def _irregular(size, target, rng):
    w, h = size
    n = int(rng.integers(6, 12))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = rng.uniform(0.5, 1.0, n)
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h

    def polygon(scale):
        image, draw = _canvas(size)
        draw.polygon([(cx + scale * r * math.cos(a), cy + scale * r * math.sin(a)) for a, r in zip(angles, radii)],
                     fill=255)
        return image

    low, high = 0.0, 2.0 * math.hypot(w, h)
    for _ in range(30):  # bisect the polygon's scale to the target area
        mid = (low + high) / 2
        low, high = (mid, high) if _coverage(polygon(mid)) < target else (low, mid)
    return (np.asarray(polygon(high)) > 0).astype(np.uint8) * 255


def write_suite(out_dir, size: tuple[int, int], per_category: int = 32, seed: int = 0) -> dict[str, tuple[int, float]]:
    """Write the suite as ``out_dir/<category>/<name>.png``; returns (count, mean ratio) per category."""
    from pathlib import Path

    from ..files import atomic_path

    summary: dict[str, list[float]] = {}
    suite = mask_suite(size, per_category, seed)
    for item in suite:
        path = Path(out_dir) / item.category / f"{item.name}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(item.mask).save(tmp, format="PNG")
        summary.setdefault(item.category, []).append(item.ratio)
    # masks of an earlier, larger suite would otherwise be read along with these (calibrate --masks)
    wanted = {f"{item.name}.png" for item in suite}
    for category in summary:
        for stale in (Path(out_dir) / category).glob(f"{category}-*.png"):
            if stale.name not in wanted:
                stale.unlink()
    return {category: (len(ratios), float(np.mean(ratios))) for category, ratios in summary.items()}

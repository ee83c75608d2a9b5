"""How much of the token grid each mask kind forces the planner to keep.

    python scripts/bucket_fit.py [--size 1024] [--samples 8]

For the paper's three mask categories (average mask ratio 6.38%, 15.92%, 35.36%) and three
shapes (scattered blobs, one elongated stroke, one square), prints the mandatory share of the
grid (dilated mask + low-frequency tokens) and the bucket the default table picks. This is
the evidence behind the default bucket capacities until `calibrate` derives them from a
mask suite.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from hilo_export import plan_tokens

CATEGORIES = {"small": 0.0638, "medium": 0.1592, "large": 0.3536}


def scattered(rng, size: int, ratio: float) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    while mask.mean() < ratio:
        radius = int(rng.integers(size // 128, size // 25))
        y, x = rng.integers(0, size - 2 * radius, 2)
        yy, xx = np.mgrid[: 2 * radius, : 2 * radius]
        mask[y : y + 2 * radius, x : x + 2 * radius] |= (yy - radius) ** 2 + (xx - radius) ** 2 < radius**2
    return mask


def elongated(rng, size: int, ratio: float) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    length = int(0.9 * size)
    thickness = max(1, round(ratio * size * size / length))
    y = int(rng.integers(0, size - thickness))
    x = int(rng.integers(0, size - length))
    mask[y : y + thickness, x : x + length] = True
    return mask


def square(rng, size: int, ratio: float) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    side = round(size * ratio**0.5)
    y, x = rng.integers(0, size - side, 2)
    mask[y : y + side, x : x + side] = True
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    print(f"{args.size}x{args.size}, token size 16, default planner and buckets, {args.samples} masks each")
    print(f"{'category':8s} {'shape':10s} {'mask':>6s} {'mandatory share':>16s}  buckets")
    for category, ratio in CATEGORIES.items():
        for shape in (scattered, elongated, square):
            shares, ratios, buckets = [], [], Counter()
            for _ in range(args.samples):
                plan = plan_tokens(image, shape(rng, args.size, ratio))
                shares.append((plan.counts["mask"] + plan.n_lowfreq) / plan.n_tokens)
                ratios.append(plan.mask_ratio)
                buckets[plan.bucket] += 1
            mix = ", ".join(f"{name} {count}" for name, count in sorted(buckets.items()))
            print(
                f"{category:8s} {shape.__name__:10s} {np.mean(ratios):6.1%} {min(shares):7.0%} - {max(shares):4.0%}   {mix}"
            )


if __name__ == "__main__":
    main()

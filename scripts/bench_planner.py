"""Planner latency on one CPU core: median of repeated plan_tokens calls.

    python scripts/bench_planner.py [--size 1024] [--repeats 50]

Prints one line per mask shape on a uint8 image (what image decoders give), then the square
mask on the same image as float32 in [0, 1]. The target is a median of at most 10 ms at
1024 x 1024.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from hilo_export import plan_tokens
from hilo_export.examples import example_image


def masks(size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    empty = np.zeros((size, size), np.uint8)
    square = empty.copy()
    square[size // 4 : size // 2, size // 4 : size // 2] = 255
    scattered = empty.copy()
    for y, x in rng.integers(0, size - size // 16, (12, 2)):
        scattered[y : y + size // 20, x : x + size // 20] = 255
    large = empty.copy()
    large[: size * 3 // 5, : size * 3 // 5] = 255
    return {"empty": empty, "square 6%": square, "scattered": scattered, "large 36%": large}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    image = np.asarray(example_image().resize((args.size, args.size)))
    print(f"planner, {args.size}x{args.size} RGB, token size 16, 1 thread, median of {args.repeats}")
    cases = [(f"uint8, {name}", image, mask) for name, mask in masks(args.size).items()]
    cases.append(("float32, square 6%", image.astype(np.float32) / 255, masks(args.size)["square 6%"]))
    for name, pixels, mask in cases:
        for _ in range(3):
            plan = plan_tokens(pixels, mask)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            plan = plan_tokens(pixels, mask)
            times.append(time.perf_counter() - start)
        ms = sorted(t * 1e3 for t in times)
        print(
            f"  {name:20s} median {statistics.median(ms):6.2f} ms  p90 {ms[int(0.9 * len(ms))]:6.2f} ms  "
            f"bucket {plan.bucket:4s} kept {plan.length}/{plan.n_tokens} ({plan.kept_ratio:.0%})"
        )


if __name__ == "__main__":
    main()

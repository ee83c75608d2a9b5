"""Bucket capacities from a set of masks: chosen so given shares of them land in s, m, l."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .buckets import FULL_BUCKET, Bucket, BucketError, choose_bucket, rooms
from .inputs import DEFAULT_TOKEN_SIZE
from .plan import PlannerConfig, mandatory_tokens, mask_from_file

BUCKET_NAMES = ("s", "m", "l")


@dataclass(frozen=True)
class Calibration:
    buckets: tuple[Bucket, ...]  # s, m, l as chosen (some may be dropped), then full
    shares: dict[str, float]  # measured share of the masks per bucket, full included
    n_masks: int


def read_masks(folder: Path) -> list[np.ndarray]:
    """Every mask image in ``folder`` and, as ``hilo-export masks --out`` writes them, in its
    ``small/``, ``medium/`` and ``large/`` (any) subfolders, one level deep."""
    from ..images import IMAGE_SUFFIXES, ImageReadError, image_files, read_gray

    files = image_files(folder, depth=1)
    if not files:
        raise BucketError(f"no mask images in {folder} or its subfolders (looked for {', '.join(IMAGE_SUFFIXES)})")
    masks = []
    for path in files:
        try:
            masks.append(mask_from_file(read_gray(path)))
        except ImageReadError as err:
            raise BucketError(f"cannot read mask: {err}") from None
    return masks


def calibrate(masks: Sequence[np.ndarray], token_size: int = DEFAULT_TOKEN_SIZE,
              shares: Sequence[float] = (0.5, 0.3, 0.2),
              config: PlannerConfig | None = None) -> Calibration:
    """Smallest fractions such that ``shares`` of the masks fit s, m and l in turn; the rest run on full."""
    if len(shares) != len(BUCKET_NAMES) or any(s < 0 for s in shares) or not 0 < sum(shares) <= 1 + 1e-9:
        raise BucketError(f"--shares takes three non-negative shares for s, m, l adding up to at most 1; got {list(shares)}")
    needs = [mandatory_tokens(mask, token_size, config) for mask in masks]
    shares_needed = np.sort([needed / n_tokens for needed, n_tokens, _ in needs])
    buckets: list[Bucket] = []
    cumulative = 0.0
    for name, share in zip(BUCKET_NAMES, shares):
        cumulative += share
        if share == 0:
            continue
        index = min(len(needs), math.ceil(cumulative * len(needs) - 1e-9)) - 1
        fraction = float(shares_needed[max(index, 0)])
        if fraction >= 1.0 or (buckets and fraction <= buckets[-1].fraction):
            continue  # these masks need the whole grid, or the previous bucket already holds them
        buckets.append(Bucket(name, math.ceil(max(fraction, 1e-3) * 1e4) / 1e4))  # round up: never below the need
    table = (*buckets, FULL_BUCKET)
    counts = {b.name: 0 for b in table}
    for needed, n_tokens, n_lowfreq in needs:
        # needed counts the low-frequency tokens too (mandatory_tokens); the rule takes mask tokens
        counts[table[choose_bucket(rooms(table, n_tokens, n_lowfreq), needed - n_lowfreq)].name] += 1
    return Calibration(table, {name: count / len(needs) for name, count in counts.items()}, len(needs))

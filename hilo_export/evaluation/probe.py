"""The context probe: can the fidelity test see a bad token selection?

A seeded set of procedural images (``reference.procedural``: gratings, plaids, lattices,
lines; generated, never stored) with suite masks: inside the hole the truth is what the
context shows, so a smooth fill cannot guess it and a model can only by reading context
tokens. Reported, pooled over the set, in-mask PSNR:

- ``dense_vs_truth`` and ``best_fill_vs_truth`` (the better of push-pull and biharmonic):
  the model must beat the fill by ``MODEL_OVER_FILL_DB``;
- ``hilo_vs_dense`` and ``core_only_vs_dense`` (every context token removed: the dilated
  mask and the low-frequency tokens alone): removing the context must cost
  ``CONTEXT_COST_DB`` more than HiLo does, or the test could not tell good context selection
  from bad.

Edits whose HiLo plan is the ``full`` bucket (identical to dense) are not pooled; their count
is reported.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..planning.buckets import FULL
from ..reference import model as ref
from ..reference.procedural import FAMILIES, procedural_image
from .errors import require_eval
from .masks import mask_suite
from .metrics import Pooled

log = logging.getLogger(__name__)

MODEL_OVER_FILL_DB = 3.0
CONTEXT_COST_DB = 3.0
PROBE_SEED = 7  # training draws from seed 0's stream: these images are fresh draws
PROBE_CATEGORY = "medium"


@dataclass(frozen=True)
class ProbeItem:
    family: str
    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray  # bool [H, W]


def probe_set(size: int, per_family: int = 2, seed: int = PROBE_SEED) -> list[ProbeItem]:
    """``per_family`` images of every procedural family, each with its own medium suite mask."""
    masks = [m.mask > 0 for m in mask_suite((size, size), per_family * len(FAMILIES), seed=seed,
                                            categories=(PROBE_CATEGORY,))]
    items = []
    for f, family in enumerate(FAMILIES):
        rng = np.random.default_rng([seed, f])
        for i in range(per_family):
            items.append(ProbeItem(family, procedural_image(size, rng, family), masks[f * per_family + i]))
    return items


def classical_fills(image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The hole filled from its border without a model: push-pull (the model's pre-fill) and biharmonic."""
    inpaint_biharmonic = require_eval("skimage.restoration", "the biharmonic fill baseline").inpaint_biharmonic

    pixels = ref.to_tensor(image)
    hole = torch.from_numpy(mask.astype(np.float32))[None, None]
    biharmonic = inpaint_biharmonic(image.astype(np.float64) / 255, mask, channel_axis=-1)
    return {"push-pull": ref.to_uint8(ref.diffusion_fill(pixels, hole)),
            "biharmonic": (biharmonic.clip(0, 1) * 255).round().astype(np.uint8)}


def run_probe(ablation: Any, size: int, per_family: int = 2, selections: tuple[str, ...] = ("hilo", "core_only"),
              seed: int = 0, progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    """The probe on ``ablation`` (an ``evaluation.ablation.Ablation``): the report's ``probe`` entry.

    ``selections`` beyond hilo and core_only add ``psnr_mask_<name>_vs_dense`` (the ablation table).
    """
    total, by_family = Pooled(), {family: Pooled() for family in FAMILIES}
    full_edits, tokens = 0, {name: [] for name in selections}
    for item in probe_set(size, per_family):
        truth, inside = item.image, item.mask
        fills = classical_fills(truth, inside)
        dense = ablation.dense(truth, inside, seed)
        for pooled in (total, by_family[item.family]):
            pooled.add("dense_vs_truth", dense, truth, inside)
            for name, filled in fills.items():
                pooled.add(f"{name}_vs_truth", filled, truth, inside)
        if ablation.plan(truth, inside).bucket == FULL:
            full_edits += 1
            continue
        for name in selections:
            edit = ablation.edit(name, truth, inside, seed)
            tokens[name].append(edit.tokens / (size // ref.TOKEN_SIZE) ** 2)
            for pooled in (total, by_family[item.family]):
                pooled.add(f"{name}_vs_dense", edit.image, dense, inside)
                pooled.add(f"{name}_vs_truth", edit.image, truth, inside)
        progress(f"probe: {item.family} done")
    return {**_summary(total), "size": [size, size], "grid": [size // ref.TOKEN_SIZE] * 2, "images": per_family * len(FAMILIES),
            "mask_category": PROBE_CATEGORY, "edits_full": full_edits,
            "selections": {name: {"psnr_mask_vs_dense": total.psnr(f"{name}_vs_dense"),
                                   "psnr_mask_vs_truth": total.psnr(f"{name}_vs_truth"),
                                   "token_ratio": float(np.mean(tokens[name])) if tokens[name] else None}
                           for name in selections},
            "families": {family: _summary(pooled) for family, pooled in by_family.items()}}


def _summary(pooled: Pooled) -> dict[str, Any]:
    fills = {name: pooled.psnr(f"{name}_vs_truth") for name in ("push-pull", "biharmonic")}
    best_fill = max(fills, key=lambda n: fills[n] if fills[n] is not None else -math.inf)
    summary = {
        "psnr_mask_dense_vs_truth": pooled.psnr("dense_vs_truth"),
        "psnr_mask_best_fill_vs_truth": fills[best_fill],
        "best_fill": best_fill,
        "psnr_mask_fills_vs_truth": fills,
        "psnr_mask_hilo_vs_dense": pooled.psnr("hilo_vs_dense"),
        "psnr_mask_core_only_vs_dense": pooled.psnr("core_only_vs_dense"),
    }
    summary["conditions"] = conditions(summary)
    return summary


def conditions(summary: dict[str, Any]) -> dict[str, Any]:
    """The probe's two conditions, each with its margin in dB (None where a value is missing)."""
    dense, fill = summary["psnr_mask_dense_vs_truth"], summary["psnr_mask_best_fill_vs_truth"]
    hilo, core = summary["psnr_mask_hilo_vs_dense"], summary["psnr_mask_core_only_vs_dense"]
    over_fill = None if dense is None or fill is None else dense - fill
    context_cost = None if hilo is None or core is None else hilo - core
    return {
        "model_over_best_fill_db": over_fill,
        "model_over_best_fill_met": over_fill is not None and over_fill >= MODEL_OVER_FILL_DB,
        "context_cost_db": context_cost,
        "context_cost_met": context_cost is not None and context_cost >= CONTEXT_COST_DB,
    }

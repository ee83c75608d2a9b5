"""Fidelity of the reference model's engines: HiLo against dense, per mask category.

The reference model's engines edit held-out images with the mask suite, HiLo and dense with the
same seeds; PSNR/SSIM inside the mask (each vs the other and vs the ground truth), in a ring
along the mask border, outside the mask (must be exact), and the noise floor (dense with one
seed vs another). Only edits that were compressed are pooled: an edit planned into ``full`` is
the dense edit, and its zero error would flatter HiLo; those are counted and scored (vs truth)
apart, as ``full_*``. The context probe (``measure_probe``) runs with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..planning.buckets import FULL
from .masks import CATEGORY_RATIOS, mask_suite
from .metrics import Pooled, border_ring, ssim
from .progress import Eta
from .settings import RING_PX, BenchSettings, eval_image
from .stats import EditPairs

log = logging.getLogger(__name__)


@dataclass
class Fidelity(Pooled):
    """Squared errors summed per comparison (pooled into one PSNR per category) and SSIM samples."""

    ssim: dict[str, list[float]] = field(default_factory=dict)
    outside_max_abs: int = 0
    edit_s: dict[str, list[float]] = field(default_factory=lambda: {"hilo": [], "dense": []})
    step_s: dict[str, list[float]] = field(default_factory=lambda: {"hilo": [], "dense": []})
    kept_ratio: list[float] = field(default_factory=list)
    buckets: list[str] = field(default_factory=list)
    grid: tuple[int, int] | None = None
    pairs: EditPairs = field(default_factory=EditPairs)  # per edit, by (mask, image, seed): the spread


def measure_fidelity(settings: BenchSettings, progress: Callable[[str], None]) -> dict[str, Fidelity]:
    """Per category; keys of edits planned into ``full`` carry the prefix ``full_`` (not pooled with the rest)."""
    from ..reference.pipeline import ReferenceInpaintPipeline
    from ..runtime.pipeline import apply
    from ..runtime.runtime import HiLoRuntime
    from .edit import reference_engines

    runtime = HiLoRuntime.load(reference_engines(settings.fidelity_resolution, settings.engines_root, progress,
                                                 settings.planner, settings.fidelity_model))
    pipe = ReferenceInpaintPipeline.from_reference(settings.fidelity_model)
    pipe.set_progress_bar_config(disable=True)
    suite = mask_suite(settings.fidelity_resolution, settings.fidelity_masks, seed=1)  # not the planning suite
    pictures = {name: eval_image(name, settings.fidelity_resolution) for name in settings.fidelity_images or settings.images}
    results = {}
    eta = Eta("fidelity edits", len(suite) * len(pictures) * len(settings.seeds), progress, every_s=30.0)
    with apply(pipe, runtime):
        for category in CATEGORY_RATIOS:
            fid = Fidelity()
            for item in (m for m in suite if m.category == category):
                inside = item.mask > 0
                ring = border_ring(item.mask, RING_PX)
                for photo, truth in pictures.items():
                    dense_by_seed = {}
                    for seed in settings.seeds:
                        dense = pipe(truth, inside, steps=settings.steps, seed=seed, dense=True)
                        hilo = pipe(truth, inside, steps=settings.steps, seed=seed)
                        dense_by_seed[seed] = dense.image
                        eta.tick(f"{category}: {item.name}, seed {seed}")
                        for way, result in (("hilo", hilo), ("dense", dense)):
                            fid.edit_s[way].append(result.total_seconds)
                            fid.step_s[way].extend(result.step_seconds)
                            fid.outside_max_abs = max(fid.outside_max_abs, int(np.abs(
                                result.image[~inside].astype(np.int16) - truth[~inside].astype(np.int16)).max(initial=0)))
                        fid.kept_ratio.append(hilo.plan.kept_ratio)
                        fid.buckets.append(hilo.plan.bucket)
                        fid.grid = tuple(hilo.plan.grid)
                        if hilo.plan.bucket == FULL:  # not compressed: scored apart, never pooled with HiLo's
                            fid.add("full_mask_dense_vs_truth", dense.image, truth, inside)
                            continue
                        fid.pairs.add((item.name, photo, seed), hilo.image, dense.image, truth, inside)
                        for region_name, region in (("mask", inside), ("ring", ring)):
                            fid.add(f"{region_name}_hilo_vs_dense", hilo.image, dense.image, region)
                            fid.add(f"{region_name}_hilo_vs_truth", hilo.image, truth, region)
                            fid.add(f"{region_name}_dense_vs_truth", dense.image, truth, region)
                        for key, (a, b) in {"hilo_vs_dense": (hilo.image, dense.image), "hilo_vs_truth": (hilo.image, truth),
                                            "dense_vs_truth": (dense.image, truth)}.items():
                            fid.ssim.setdefault(key, []).append(ssim(a, b, inside))
                    seeds = list(dense_by_seed)
                    for s1, s2 in zip(seeds, seeds[1:]):
                        fid.add("mask_noise_floor", dense_by_seed[s1], dense_by_seed[s2], inside)
            results[category] = fid
    return results


def measure_probe(settings: BenchSettings, progress: Callable[[str], None]) -> dict[str, Any]:
    """The context probe at the fidelity resolution, on torch with the shipped model and decoder."""
    from ..model.loading import load_reference, reference_weights_dir
    from ..reference.model import load_decoder
    from .ablation import Ablation
    from .probe import run_probe

    ablation = Ablation(load_reference(settings.fidelity_model), load_decoder(reference_weights_dir(settings.fidelity_model)),
                        settings.buckets, steps=settings.steps)
    return run_probe(ablation, settings.fidelity_resolution[0], settings.probe_per_family, progress=progress)

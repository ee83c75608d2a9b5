"""Planner variants measured edit by edit, paired by case and noise seed, for choosing defaults.

Each variant is a planner setting (sizing x context policy x low-frequency tokens); the random
policy runs several draws (context seeds). Every compressed edit of the reference model is
compared in the mask with the dense edit of the same case and noise seed and with the truth, and
written as one JSON line, so a long run can be resumed and read while it runs. ``stats.py``
turns the lines into paired differences and applies the defaults rule.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from ..planning.buckets import FULL
from ..planning.plan import CONTEXTS, RANDOM, SIZINGS, PlannerConfig
from .metrics import psnr

log = logging.getLogger(__name__)

DENSE = "dense"
# the paper's low-frequency tokens, one per 16 x 16 block of tokens: what "with low-frequency
# tokens" means in a variant, whatever the planner's default
LOWFREQ_FACTOR = 16


@dataclass(frozen=True)
class StudyVariant:
    label: str
    sizing: str
    context: str
    lowfreq: bool
    draws: tuple[int, ...] = (0,)  # context seeds; several for the random policy

    def config(self, base: PlannerConfig, draw: int) -> PlannerConfig:
        return replace(base, sizing=self.sizing, context=self.context, context_seed=draw,
                       lowfreq_factor=LOWFREQ_FACTOR if self.lowfreq else None)


def study_variants(draws: int = 3, lowfreq_off: Iterable[str] = ("exact/sobel", "exact/ring"),
                   contexts: Iterable[str] = CONTEXTS) -> list[StudyVariant]:
    """Every sizing x context with low-frequency tokens; without them for the ``sizing/context``
    pairs in ``lowfreq_off``."""
    out = []
    lowfreq_off = set(lowfreq_off)
    for lowfreq in (True, False):
        for sizing in SIZINGS:
            for context in contexts:
                if not lowfreq and f"{sizing}/{context}" not in lowfreq_off:
                    continue
                seeds = tuple(range(draws)) if context == RANDOM else (0,)
                label = f"{sizing}/{context}" + ("" if lowfreq else "/no-lowfreq")
                out.append(StudyVariant(label, sizing, context, lowfreq, seeds))
    return out


@dataclass(frozen=True)
class StudyCase:
    photo: str
    suite_seed: int
    mask_name: str
    category: str

    @property
    def key(self) -> str:
        return f"{self.photo}/{self.mask_name}/suite{self.suite_seed}"


def run_study(ablation: Any, log_path: Path, resolution: int, photos: Iterable[str], suite_seeds: Iterable[int],
              noise_seeds: Iterable[int], variants: list[StudyVariant], base: PlannerConfig | None = None,
              per_category: int = 1, progress: Callable[[str], None] = log.info) -> list[dict[str, Any]]:
    """Edit every case x noise seed densely and with every variant (and draw); append one JSON
    line per edit to ``log_path`` (lines already there are kept and not redone). Cases the
    planner sends to ``full`` are logged once as such and not compared (identical to dense).

    ``ablation``: an ``evaluation.ablation.Ablation`` (its ``config`` is set per variant).
    Returns every record in the file."""
    from ..reference.model import TOKEN_SIZE
    from .masks import mask_suite
    from .settings import eval_image

    base = replace(base or PlannerConfig(), lowfreq_factor=LOWFREQ_FACTOR)  # the buckets as the variants see them
    noise_seeds = list(noise_seeds)
    n_grid = (resolution // TOKEN_SIZE) ** 2
    log_path = Path(log_path)
    done = {_record_key(r) for r in read_records(log_path)}
    size = (resolution, resolution)
    # photo by photo: a run cut short leaves whole photos (every mask, every seed) behind it
    suites = {seed: mask_suite(size, per_category, seed=seed) for seed in suite_seeds}
    units = [(StudyCase(photo, seed, item.name, item.category), item.mask > 0)
             for photo in photos for seed, suite in suites.items() for item in suite]
    pictures = {photo: eval_image(photo, size) for photo in {c.photo for c, _ in units}}
    with open(log_path, "a") as out:
        def write(record: dict[str, Any]) -> None:
            out.write(json.dumps(record) + "\n")
            out.flush()

        for case, inside in units:
            truth = pictures[case.photo]
            wanted = [(case.key, v.label, noise, draw) for noise in noise_seeds for v in variants for draw in v.draws]
            if all(key in done for key in wanted):
                continue
            ablation.config = base
            if ablation.plan(truth, inside).bucket == FULL:
                record = {"case": case.key, "category": case.category, "variant": FULL, "noise_seed": None, "draw": None}
                if _record_key(record) not in done:
                    write(record)
                continue
            for noise in noise_seeds:
                start = time.perf_counter()
                dense = ablation.dense(truth, inside, noise)
                dense_s = time.perf_counter() - start
                dense_record = _record(case, DENSE, noise, None, dense, truth, None, inside, n_grid, dense_s)
                if _record_key(dense_record) not in done:
                    write(dense_record)
                edits: dict[tuple, Any] = {}  # plans that send the same tokens edit the same: run once
                for variant in variants:
                    for draw in variant.draws:
                        record = {"case": case.key, "variant": variant.label, "noise_seed": noise, "draw": draw}
                        if _record_key(record) in done:
                            continue
                        ablation.config = variant.config(base, draw)
                        plan = ablation.plan(truth, inside)
                        same = (plan.n_lowfreq, plan.keep_indices.numpy().tobytes())
                        start = time.perf_counter()
                        if same not in edits:
                            edits[same] = ablation.edit("hilo", truth, inside, noise)
                        edit = edits[same]
                        write(_record(case, variant.label, noise, draw, edit.image, truth, dense, inside, edit.tokens,
                                      time.perf_counter() - start))
                progress(f"study: {case.key} noise {noise} done")
    ablation.config = base
    return read_records(log_path)


def read_records(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    records: dict[tuple, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records.setdefault(_record_key(record), record)  # an edit logged twice counts once
    return list(records.values())


def _record_key(record: dict[str, Any]) -> tuple:
    return record["case"], record["variant"], record["noise_seed"], record["draw"]


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 4)


def _record(case: StudyCase, variant: str, noise: int, draw: int | None, image, truth, dense, inside,
            tokens: int, seconds: float) -> dict[str, Any]:
    return {"case": case.key, "category": case.category, "variant": variant, "noise_seed": noise, "draw": draw,
            "tokens": int(tokens),
            "psnr_mask_vs_truth": _finite(psnr(image, truth, inside)),
            "psnr_mask_vs_dense": None if dense is None else _finite(psnr(image, dense, inside)),
            "seconds": round(seconds, 2)}


def context_geometry(resolution: int, photos: Iterable[str], suite_seeds: Iterable[int], base: PlannerConfig | None = None,
                     per_category: int = 1, sizing: str = "exact") -> dict[str, Any]:
    """Where each policy's context tokens lie (planning only, no edits): per policy, the mean
    Chebyshev distance of its context tokens to the dilated mask, and each policy's overlap with
    the ring's choice (shared context tokens over context tokens), averaged over the cases."""
    from ..planning.plan import MASK, plan_tokens
    from ..planning.selection import ring_distance
    from ..reference.model import TOKEN_SIZE
    from .masks import mask_suite
    from .settings import eval_image

    base = replace(base or PlannerConfig(), sizing=sizing)
    distance: dict[str, list[float]] = {c: [] for c in CONTEXTS}
    overlap: dict[str, list[float]] = {c: [] for c in CONTEXTS}
    size = (resolution, resolution)
    for photo in photos:
        image = eval_image(photo, size)
        for seed in suite_seeds:
            for item in mask_suite(size, per_category, seed=seed):
                chosen = {}
                for context in CONTEXTS:
                    plan = plan_tokens(image, item.mask > 0, TOKEN_SIZE, "s,m,l", replace(base, context=context))
                    if plan.bucket == FULL:
                        break
                    mask_tokens = (plan.kinds.reshape(-1) == MASK).nonzero().flatten().tolist()
                    context_tokens = set(plan.keep_indices.tolist()) - set(mask_tokens)
                    chosen[context] = context_tokens
                    d = ring_distance(plan.kinds == MASK).reshape(-1)
                    if context_tokens:
                        distance[context].append(float(d[sorted(context_tokens)].mean()))
                if len(chosen) == len(CONTEXTS) and chosen["ring"]:
                    for context in CONTEXTS:
                        overlap[context].append(len(chosen[context] & chosen["ring"]) / len(chosen["ring"]))
    return {"sizing": sizing,
            "mean_distance_tokens": {c: round(float(sum(v) / len(v)), 2) if v else None for c, v in distance.items()},
            "overlap_with_ring": {c: round(float(sum(v) / len(v)), 3) if v else None for c, v in overlap.items()},
            "cases": len(overlap["ring"])}

"""Per-step latency of the bucket engines against ``full``, per mask category.

Each category's plans stand as a few weighted sequence lengths (``timing.timed_lengths``: with
exact sizing every plan has its own length), timed with ``full`` in ``repeats`` interleaved
rounds in one process; a category's speedup is the median over rounds of full's step time over
the weighted step time of that round, with the interquartile range of the per-round ratios.
``time_categories`` does this for any runtime and plans (the built-in bench's flux-shaped
engines, or a user's pipeline engines); ``measure_latency`` builds the built-in model first.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..export import BuildRequest, build
from ..planning.buckets import FULL
from ..planning.plan import TokenPlan
from .masks import CATEGORY_RATIOS, SuiteMask, mask_suite
from .progress import Eta
from .settings import BenchSettings, eval_image
from .timing import Length, ideal_speedup, round_ratios, spread, timed_lengths

log = logging.getLogger(__name__)


@dataclass
class CategoryPlans:
    name: str
    masks: list[SuiteMask]
    plans: list[TokenPlan]
    planner_s: list[float]

    def bucket_mix(self) -> dict[str, float]:
        names = [p.bucket for p in self.plans]
        return {b: names.count(b) / len(names) for b in dict.fromkeys(names)}  # in order of first use


@dataclass
class Timings:
    """Step times of every timed length, one per round, and the weighted lengths of each category."""

    weighted: dict[str, list[tuple[Length, float]]]  # per category
    full: Length
    times: dict[Length, list[float]]
    other: dict[str, dict[Length, list[float]]] = field(default_factory=dict)  # other backends, same feeds and rounds


@dataclass
class Latency(Timings):
    runtime: Any = None
    planned: list[CategoryPlans] | None = None


def plan_categories(plan: Callable[[np.ndarray, np.ndarray], TokenPlan], resolution: tuple[int, int], per_category: int,
                    images: tuple[str, ...]) -> list[CategoryPlans]:
    """Plan every suite mask of each category over the evaluation images (cycled), timing the planner."""
    pictures = [eval_image(name, resolution) for name in images]
    suite = mask_suite(resolution, per_category)
    result = []
    for category in CATEGORY_RATIOS:
        masks = [m for m in suite if m.category == category]
        plans, times = [], []
        for i, item in enumerate(masks):
            start = time.perf_counter()
            plans.append(plan(pictures[i % len(pictures)], item.mask > 0))
            times.append(time.perf_counter() - start)
        result.append(CategoryPlans(category, masks, plans, times))
    return result


def time_categories(runtime: Any, plans: dict[str, Sequence[TokenPlan]], length_groups: int, repeats: int,
                    progress: Callable[[str], None] = log.info, others: dict[str, Any] | None = None) -> Timings:
    """Time each category's lengths and ``full`` on ``runtime``'s engines in ``repeats`` interleaved rounds
    (after one warm-up call each); ``plans``: category name -> its plans (categories without plans are left out).
    ``others``: runtimes of other backends for the same folder settings, timed on the same feeds in the same rounds."""
    manifest = runtime.manifest
    weighted = {name: timed_lengths(p, length_groups) for name, p in plans.items() if p}
    n_tokens = manifest["grid"][0] * manifest["grid"][1]
    full = Length(n_tokens, n_tokens, FULL)
    lengths = sorted({full, *(x for pairs in weighted.values() for x, _ in pairs)})
    buckets = {b["name"]: b for b in manifest["buckets"]}
    feeds = {x: random_feeds(buckets[x.bucket], manifest, x.kept) for x in lengths}
    progress("latency: timing " + ", ".join(f"{x.bucket}@{x.sequence}" for x in lengths)
             + f" in {repeats} interleaved rounds after a warm-up")
    runtimes = {"": runtime, **(others or {})}
    eta = Eta("latency engine calls", len(lengths) * (repeats + 1) * len(runtimes), progress)
    for x in lengths:  # warm-up: first runs allocate and pick kernels
        for each in runtimes.values():
            each.run_bucket(x.bucket, feeds[x])
            eta.tick(f"warm-up {x.bucket}@{x.sequence}")
    times: dict[Length, list[float]] = {x: [] for x in lengths}
    other: dict[str, dict[Length, list[float]]] = {name: {x: [] for x in lengths} for name in others or {}}
    for r in range(repeats):
        for x in lengths:  # interleaved: drift of the machine hits every length (and backend) alike
            for name, each in runtimes.items():
                start = time.perf_counter()
                each.run_bucket(x.bucket, feeds[x])
                (other[name] if name else times)[x].append(time.perf_counter() - start)
                eta.tick(f"round {r + 1}/{repeats}, {name or 'main'} {x.bucket}@{x.sequence} "
                         f"{time.perf_counter() - start:.2f} s")
    return Timings(weighted, full, times, other)


def measure_latency(settings: BenchSettings, progress: Callable[[str], None]) -> Latency:
    """Build (or reuse) the built-in latency model's engines, plan the suite with them, then time it."""
    from ..runtime.runtime import HiLoRuntime

    width, height = settings.latency_resolution
    folder = build(
        BuildRequest(settings.latency_model, buckets=settings.buckets, resolution=settings.latency_resolution,
                     backend=settings.backend, out_dir=settings.engines_root / f"{settings.latency_model}-{width}x{height}", config=settings.planner),
        progress=progress,
    )
    runtime = HiLoRuntime.load(folder)
    others = {b: HiLoRuntime.load(build(BuildRequest(
        settings.latency_model, buckets=settings.buckets, resolution=settings.latency_resolution, config=settings.planner,
        backend=b, out_dir=settings.engines_root / f"{settings.latency_model}-{width}x{height}-{b}"), progress=progress))
        for b in settings.latency_backends}
    planned = plan_categories(runtime.plan, settings.latency_resolution, settings.per_category, settings.images)
    timings = time_categories(runtime, {cat.name: cat.plans for cat in planned}, settings.length_groups, settings.repeats,
                              progress, others)
    return Latency(timings.weighted, timings.full, timings.times, timings.other, runtime, planned)


def lengths_json(timings: Timings, flops: Callable[[int], float] | None = None) -> list[dict[str, Any]]:
    """Every timed engine call: its rounds, median, and speedup over ``full`` (median and IQR of rounds)."""
    full_s = timings.times[timings.full]
    rows = []
    for x, t in timings.times.items():
        row = {**asdict(x), "step_s_rounds": t, "step_s_median": statistics.median(t),
               "speedup": spread([f / s for f, s in zip(full_s, t)])}
        if flops is not None:
            row["ideal_speedup"] = flops(timings.full.sequence) / flops(x.sequence)
        rows.append(row)
    return rows


def random_feeds(bucket: dict[str, Any], manifest: dict[str, Any], kept: int) -> dict[str, np.ndarray]:
    """Engine inputs of one bucket at ``kept`` tokens: random activations, true positions, a random selection."""
    rng = np.random.default_rng(0)
    h, w = manifest["grid"]
    feeds = {}
    for spec in bucket["inputs"]:
        name, shape, dtype = spec["name"], spec["shape"], spec["dtype"]
        if name == "keep_indices":
            feeds[name] = np.sort(rng.permutation(h * w)[:kept])[None].repeat(shape[0], 0).astype(dtype)
        elif name == "img_ids":
            feeds[name] = np.stack([np.zeros(h * w), np.arange(h * w) // w, np.arange(h * w) % w], 1).astype(dtype)
        elif name in ("txt_ids", "fill", "use_fill"):  # use_fill false: dropped tokens from the low-frequency ones
            feeds[name] = np.zeros(shape, dtype)
        elif name == "timestep":
            feeds[name] = np.full(shape, 0.5, dtype)
        elif name == "guidance":
            feeds[name] = np.full(shape, 3.5, dtype)
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def category_speed(weighted: list[tuple[Length, float]], full: Length, times: dict[Length, list[float]], plans: list[Any],
                   flops: Callable[[int], float] | None, dev: Callable[[int], float] | None, steps: int,
                   planner_s: float) -> dict[str, Any]:
    """Speed of a category whose plans the timed lengths ``weighted`` stand for.

    ``speedup`` is the median over rounds of full's step time over the weighted step time of the
    same round (``speedup_q25``/``q75``/``iqr``: the spread of those per-round ratios). The ideal
    is the same ratio in FLOPs at the timed lengths; ``ideal_speedup_plans`` is it over every
    plan's own length (how well the few timed lengths stand for the category). Without ``flops``
    (a model whose FLOPs are not counted) the ideal fields are left out."""
    ratios = round_ratios(times[full], times, weighted)
    ratio = spread(ratios)
    rounds = len(times[full])
    step_rounds = [sum(w * times[x][r] for x, w in weighted) for r in range(rounds)]
    step, dense = statistics.median(step_rounds), statistics.median(times[full])
    result = {
        "timed_lengths": [{**asdict(x), "weight": w} for x, w in weighted],
        "step_s_hilo": step, "step_s_dense": dense,
        "speedup": ratio["median"], "speedup_q25": ratio["q25"], "speedup_q75": ratio["q75"], "speedup_iqr": ratio["iqr"],
        "speedup_rounds": ratios,
        # composed from the measured step: the whole edit's phases are measured apart where a pipeline runs
        "edit_s_hilo_composed": planner_s + steps * step, "edit_s_dense_composed": steps * dense,
    }
    if flops is not None:
        ideal = ideal_speedup(full.sequence, weighted, flops)
        every_plan = [(Length(p.length, 0, p.bucket), 1 / len(plans)) for p in plans]
        result.update(ideal_speedup=ideal, ideal_speedup_plans=ideal_speedup(full.sequence, every_plan, flops),
                      achieved_over_ideal=ratio["median"] / ideal)
        if dev is not None:
            result["flux1_dev_ideal_speedup"] = ideal_speedup(full.sequence, every_plan, dev)
    return result

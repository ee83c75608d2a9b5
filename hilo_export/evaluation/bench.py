"""``hilo-export bench``: latency and fidelity of HiLo against the dense model, per mask category.

Latency: the engines of ``latency_model`` (flux-shaped by default: Flux.1 width and text
length, two blocks). Each category's plans stand as a few weighted sequence lengths
(``timing.timed_lengths``: with exact sizing every plan has its own length), timed with
``full`` in ``repeats`` interleaved rounds in one process; a category's speedup is the median
over rounds of full's step time over the weighted step time of that round, reported with the
interquartile range of the per-round ratios. The ideal is the same ratio in FLOPs
(``flops.StepFlops``) at the timed lengths, and over every plan's length, also for Flux.1-dev.

Fidelity: the reference model's engines edit held-out images with the mask suite, HiLo and
dense with the same seeds; PSNR/SSIM inside the mask (each vs the other and vs the ground
truth), in a ring along the mask border, outside the mask (must be exact), and the noise
floor (dense with one seed vs another). It runs on the latency figures' token grid (64x64:
the reference model's 8-px tokens at 512 px, Flux's 16-px at 1024), and pools only edits
that were compressed: an edit planned into ``full`` is the dense edit, and its zero error
would flatter HiLo; those are counted and scored (vs truth) apart, as ``full_*``.

The context probe (``probe``) runs with fidelity: procedural images whose hole only the
context can predict, where removing the context must cost more than HiLo does.
"""

from __future__ import annotations

import logging
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..errors import HiLoError
from ..export import BuildRequest, build
from ..model.loading import BUILTIN_CONFIGS, REFERENCE, text_len_for
from ..planning.buckets import FULL, parse_buckets
from ..planning.plan import PlannerConfig, TokenPlan
from .flops import FLUX1_DEV, StepFlops
from .masks import CATEGORY_RATIOS, SuiteMask, mask_suite
from .metrics import Pooled, border_ring, ssim
from .timing import Length, ideal_speedup, round_ratios, spread, timed_lengths

log = logging.getLogger(__name__)

EVAL_IMAGES = ("coffee", "chelsea", "rocket")
RING_PX = 8  # border ring width: one reference-model token
# the targets: per-step speedup per category, and fidelity
SPEEDUP_TARGETS = {"small": 4.0, "medium": 2.9, "large": 1.9}  # issue 11
ACHIEVED_TARGET = 0.9
PSNR_TO_TRUTH_MARGIN_DB = 0.2
PSNR_VS_DENSE_TARGET_DB = 30.0


class BenchError(HiLoError, ValueError):
    """Bench settings that cannot be run; the message says what to change."""


@dataclass
class BenchSettings:
    out: Path
    latency_model: str = "flux-shaped"
    latency_resolution: tuple[int, int] = (1024, 1024)
    fidelity_resolution: tuple[int, int] = (512, 512)  # the reference model's 64x64 grid: latency's
    per_category: int = 32  # masks planned per category (bucket mix, token ratio, planner time)
    fidelity_masks: int = 4  # masks per category edited for fidelity, on every image and seed
    probe_per_family: int = 2  # context-probe images per procedural family
    images: tuple[str, ...] = EVAL_IMAGES  # latency planning; fidelity too unless fidelity_images is given
    fidelity_images: tuple[str, ...] | None = None  # a subset for the (slow) fidelity edits
    seeds: tuple[int, ...] = (0, 1)
    steps: int = 8
    repeats: int = 7  # interleaved latency rounds: the report gives the median and IQR of per-round ratios
    length_groups: int = 3  # exact sizing: a category's plans timed as this many lengths (timing.timed_lengths)
    buckets: str = "s,m,l"
    planner: PlannerConfig = field(default_factory=PlannerConfig)  # the latency engines' planner (fidelity: the reference build's)
    engines_root: Path = Path("engines")
    latency: bool = True
    fidelity: bool = True

    def __post_init__(self) -> None:
        for name in ("per_category", "fidelity_masks", "probe_per_family", "steps", "repeats", "length_groups"):
            if getattr(self, name) < 1:
                raise BenchError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.images or not self.seeds:
            raise BenchError("give at least one evaluation image and one seed")
        if not (self.latency or self.fidelity):
            raise BenchError("nothing to measure: leave out --skip-latency or --skip-fidelity")

    @classmethod
    def quick(cls, out: Path, **overrides: Any) -> "BenchSettings":
        """Small sizes for CI (20 x 12 and 16 x 16 token grids): every code path, in about a minute."""
        values = dict(latency_model="tiny-flux", latency_resolution=(320, 192), fidelity_resolution=(128, 128),
                      per_category=4, fidelity_masks=1, probe_per_family=1, images=EVAL_IMAGES[:1], seeds=(0, 1), steps=2,
                      repeats=3, length_groups=2)
        return cls(out, **{**values, **overrides})


def eval_image(name: str, size: tuple[int, int]) -> np.ndarray:
    path = resources.files("hilo_export") / "data" / "eval" / f"{name}.png"
    with Image.open(str(path)) as image:
        return np.asarray(image.convert("RGB").resize(size, Image.LANCZOS))


# ------------------------------------------------------------------ latency


@dataclass
class Latency:
    """Step times of every timed length, one per round, and the plans they stand for."""

    runtime: Any
    planned: list["CategoryPlans"]
    weighted: dict[str, list[tuple[Length, float]]]  # per category
    full: Length
    times: dict[Length, list[float]]


def measure_latency(settings: BenchSettings, progress: Callable[[str], None]) -> Latency:
    """Plan the suite with the latency engines' settings, then time each category's lengths
    (``timing.timed_lengths``) and ``full`` in ``repeats`` interleaved rounds."""
    from ..runtime.runtime import HiLoRuntime

    width, height = settings.latency_resolution
    folder = build(
        BuildRequest(settings.latency_model, buckets=settings.buckets, resolution=settings.latency_resolution,
                     out_dir=settings.engines_root / f"{settings.latency_model}-{width}x{height}", config=settings.planner),
        progress=progress,
    )
    runtime = HiLoRuntime.load(folder)
    manifest = runtime.manifest
    planned = plan_categories(runtime.plan, settings.latency_resolution, settings.per_category, settings.images)
    weighted = {cat.name: timed_lengths(cat.plans, settings.length_groups) for cat in planned}
    n_tokens = manifest["grid"][0] * manifest["grid"][1]
    full = Length(n_tokens, n_tokens, FULL)
    lengths = sorted({full, *(x for pairs in weighted.values() for x, _ in pairs)})
    buckets = {b["name"]: b for b in manifest["buckets"]}
    feeds = {x: _random_feeds(buckets[x.bucket], manifest, x.kept) for x in lengths}
    progress("latency: timing " + ", ".join(f"{x.bucket}@{x.sequence}" for x in lengths))
    for x in lengths:  # warm-up: first runs allocate and pick kernels
        runtime.run_bucket(x.bucket, feeds[x])
    times: dict[Length, list[float]] = {x: [] for x in lengths}
    for r in range(settings.repeats):
        for x in lengths:  # interleaved: drift of the machine hits every length alike
            start = time.perf_counter()
            runtime.run_bucket(x.bucket, feeds[x])
            times[x].append(time.perf_counter() - start)
        progress(f"latency round {r + 1}/{settings.repeats}: " + ", ".join(
            f"{x.sequence} {t[-1]:.2f}s" for x, t in times.items()))
    return Latency(runtime, planned, weighted, full, times)


def _model_config(name: str) -> dict:
    if name == REFERENCE:
        from ..reference.model import CONFIG

        return CONFIG
    if name not in BUILTIN_CONFIGS:
        raise BenchError(f"latency model {name!r}: bench times a built-in ({', '.join(BUILTIN_CONFIGS)}, {REFERENCE})")
    return BUILTIN_CONFIGS[name]


def _random_feeds(bucket: dict[str, Any], manifest: dict[str, Any], kept: int) -> dict[str, np.ndarray]:
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
        elif name in ("txt_ids", "fill"):
            feeds[name] = np.zeros(shape, dtype)
        elif name == "timestep":
            feeds[name] = np.full(shape, 0.5, dtype)
        elif name == "guidance":
            feeds[name] = np.full(shape, 3.5, dtype)
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


# ------------------------------------------------------------------ planning


@dataclass
class CategoryPlans:
    name: str
    masks: list[SuiteMask]
    plans: list[TokenPlan]
    planner_s: list[float]

    def bucket_mix(self) -> dict[str, float]:
        names = [p.bucket for p in self.plans]
        return {b: names.count(b) / len(names) for b in dict.fromkeys(sorted(set(names), key=names.index))}


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


# ------------------------------------------------------------------ fidelity


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


def measure_fidelity(settings: BenchSettings, progress: Callable[[str], None]) -> dict[str, Fidelity]:
    """Per category; keys of edits planned into ``full`` carry the prefix ``full_`` (not pooled with the rest)."""
    from ..reference.pipeline import ReferenceInpaintPipeline
    from ..runtime.pipeline import apply
    from ..runtime.runtime import HiLoRuntime
    from .edit import reference_engines

    runtime = HiLoRuntime.load(reference_engines(settings.fidelity_resolution, settings.engines_root, progress,
                                                 settings.planner))
    pipe = ReferenceInpaintPipeline.from_reference()
    pipe.set_progress_bar_config(disable=True)
    suite = mask_suite(settings.fidelity_resolution, settings.fidelity_masks, seed=1)  # not the planning suite
    pictures = {name: eval_image(name, settings.fidelity_resolution) for name in settings.fidelity_images or settings.images}
    results = {}
    with apply(pipe, runtime):
        for category in CATEGORY_RATIOS:
            fid = Fidelity()
            for item in (m for m in suite if m.category == category):
                inside = item.mask > 0
                ring = border_ring(item.mask, RING_PX)
                for truth in pictures.values():
                    dense_by_seed = {}
                    for seed in settings.seeds:
                        dense = pipe(truth, inside, steps=settings.steps, seed=seed, dense=True)
                        hilo = pipe(truth, inside, steps=settings.steps, seed=seed)
                        dense_by_seed[seed] = dense.image
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
                progress(f"fidelity {category}: {item.name} done")
            results[category] = fid
    return results


def measure_probe(settings: BenchSettings, progress: Callable[[str], None]) -> dict[str, Any]:
    """The context probe at the fidelity resolution, on torch with the shipped model and decoder."""
    from ..model.loading import load_reference, reference_weights_dir
    from ..reference.model import load_decoder
    from .ablation import Ablation
    from .probe import run_probe

    ablation = Ablation(load_reference(), load_decoder(reference_weights_dir()), settings.buckets, steps=settings.steps)
    return run_probe(ablation, settings.fidelity_resolution[0], settings.probe_per_family, progress=progress)


# ------------------------------------------------------------------ the report


def run_bench(settings: BenchSettings, progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    from .report import write_report

    started = time.time()
    report: dict[str, Any] = {"settings": _settings_json(settings), "machine": _machine()}
    categories = {name: {"name": name, "mask_ratio_target": ratio} for name, ratio in CATEGORY_RATIOS.items()}
    if settings.latency:
        lat = measure_latency(settings, progress)
        manifest = lat.runtime.manifest
        flops = StepFlops.count(_model_config(settings.latency_model), manifest["text_len"])
        dev = StepFlops.count(FLUX1_DEV, text_len_for("flux-shaped"))
        report["latency_grid"] = list(manifest["grid"])
        full_s = lat.times[lat.full]
        report["latency"] = {
            "model": settings.latency_model, "resolution": list(settings.latency_resolution),
            "grid": manifest["grid"], "text_len": manifest["text_len"], "backend": manifest["backend"],
            "sizing": manifest["planner"]["sizing"], "rounds": settings.repeats,
            "lengths": [{**asdict(x), "step_s_rounds": t, "step_s_median": statistics.median(t),
                         "speedup": spread([f / s for f, s in zip(full_s, t)]),
                         "ideal_speedup": flops(lat.full.sequence) / flops(x.sequence)}
                        for x, t in lat.times.items()],
        }
        for cat in lat.planned:
            planner_s = statistics.median(cat.planner_s)
            categories[cat.name].update(
                n_masks=len(cat.masks),
                mask_ratio_mean=float(np.mean([m.ratio for m in cat.masks])),
                token_ratio_mean=float(np.mean([p.kept_ratio for p in cat.plans])),
                bucket_mix=cat.bucket_mix(),
                planner_ms_median=planner_s * 1e3,
                **category_speed(lat.weighted[cat.name], lat.full, lat.times, cat.plans, flops, dev, settings.steps,
                                 planner_s),
            )
    if settings.fidelity:
        for name, fid in measure_fidelity(settings, progress).items():
            report["fidelity_grid"] = list(fid.grid)
            entry = categories[name]
            compressed = [r for r, b in zip(fid.kept_ratio, fid.buckets) if b != FULL]
            entry["fidelity"] = {
                "token_ratio_mean": float(np.mean(fid.kept_ratio)),
                "token_ratio_mean_compressed": float(np.mean(compressed)) if compressed else None,
                "edits_compressed": len(compressed),
                "edits_full": len(fid.buckets) - len(compressed),
                "bucket_mix": {b: fid.buckets.count(b) / len(fid.buckets) for b in dict.fromkeys(fid.buckets)},
                "edit_s_hilo_median": statistics.median(fid.edit_s["hilo"]),
                "edit_s_dense_median": statistics.median(fid.edit_s["dense"]),
                "step_s_hilo_median": statistics.median(fid.step_s["hilo"]),
                "step_s_dense_median": statistics.median(fid.step_s["dense"]),
                "outside_mask_max_abs_diff": fid.outside_max_abs,
                "edits": len(fid.kept_ratio),
            }
            for key in fid.sq:
                entry[f"psnr_{key}"] = fid.psnr(key)
            for key in ("mask_hilo_vs_dense", "mask_hilo_vs_truth", "mask_dense_vs_truth", "ring_hilo_vs_dense",
                        "ring_hilo_vs_truth", "ring_dense_vs_truth", "full_mask_dense_vs_truth"):
                entry.setdefault(f"psnr_{key}", None)  # every category has every field, compressed edits or not
            for key in ("hilo_vs_dense", "hilo_vs_truth", "dense_vs_truth"):
                values = fid.ssim.get(key)
                entry[f"ssim_mask_{key}"] = float(np.mean(values)) if values else None
        report["probe"] = measure_probe(settings, progress)
    report["categories"] = list(categories.values())
    report["targets"] = _targets(report["categories"], settings) + _probe_targets(report.get("probe"))
    report["wall_s"] = round(time.time() - started, 1)
    write_report(report, settings.out)
    return report


def category_speed(weighted: list[tuple[Length, float]], full: Length, times: dict[Length, list[float]], plans: list[Any],
                   flops: Callable[[int], float], dev: Callable[[int], float], steps: int, planner_s: float) -> dict[str, Any]:
    """Speed of a category whose plans the timed lengths ``weighted`` stand for.

    ``speedup`` is the median over rounds of full's step time over the weighted step time of the
    same round (``speedup_q25``/``q75``/``iqr``: the spread of those per-round ratios). The ideal
    is the same ratio in FLOPs at the timed lengths; ``ideal_speedup_plans`` is it over every
    plan's own length (how well the few timed lengths stand for the category)."""
    ratios = round_ratios(times[full], times, weighted)
    ratio = spread(ratios)
    rounds = len(times[full])
    step_rounds = [sum(w * times[x][r] for x, w in weighted) for r in range(rounds)]
    step, dense = statistics.median(step_rounds), statistics.median(times[full])
    ideal = ideal_speedup(full.sequence, weighted, flops)
    every_plan = [(Length(p.length, 0, p.bucket), 1 / len(plans)) for p in plans]
    return {
        "timed_lengths": [{**asdict(x), "weight": w} for x, w in weighted],
        "step_s_hilo": step, "step_s_dense": dense,
        "speedup": ratio["median"], "speedup_q25": ratio["q25"], "speedup_q75": ratio["q75"], "speedup_iqr": ratio["iqr"],
        "speedup_rounds": ratios,
        "ideal_speedup": ideal, "ideal_speedup_plans": ideal_speedup(full.sequence, every_plan, flops),
        "achieved_over_ideal": ratio["median"] / ideal,
        "flux1_dev_ideal_speedup": ideal_speedup(full.sequence, every_plan, dev),
        # the latency model has no trained weights to run a whole edit with: its edit time is composed
        "edit_s_hilo_composed": planner_s + steps * step, "edit_s_dense_composed": steps * dense,
    }


def _targets(categories: list[dict[str, Any]], settings: BenchSettings) -> list[dict[str, Any]]:
    checks = []
    for c in categories:
        name = c["name"]
        if "speedup" in c:
            checks.append({"category": name, "target": f"speedup >= {SPEEDUP_TARGETS[name]}x", "value": c["speedup"],
                           "met": c["speedup"] >= SPEEDUP_TARGETS[name]})
            checks.append({"category": name, "target": f"achieved/ideal >= {ACHIEVED_TARGET}",
                           "value": c["achieved_over_ideal"], "met": c["achieved_over_ideal"] >= ACHIEVED_TARGET})
        if "fidelity" in c and c["fidelity"]["edits_compressed"]:
            vs_dense = c["psnr_mask_hilo_vs_dense"]
            gap = c["psnr_mask_dense_vs_truth"] - c["psnr_mask_hilo_vs_truth"]
            checks.append({"category": name, "target": f"in-mask PSNR HiLo vs dense >= {PSNR_VS_DENSE_TARGET_DB} dB",
                           "value": vs_dense, "met": vs_dense is None or vs_dense >= PSNR_VS_DENSE_TARGET_DB})
            checks.append({"category": name, "target": f"in-mask PSNR to truth within {PSNR_TO_TRUTH_MARGIN_DB} dB of dense",
                           "value": gap, "met": gap <= PSNR_TO_TRUTH_MARGIN_DB})
        if "fidelity" in c:
            checks.append({"category": name, "target": "outside the mask: equal to the input",
                           "value": c["fidelity"]["outside_mask_max_abs_diff"],
                           "met": c["fidelity"]["outside_mask_max_abs_diff"] == 0})
    return checks


def _probe_targets(probe: dict[str, Any] | None) -> list[dict[str, Any]]:
    if probe is None:
        return []
    from .probe import CONTEXT_COST_DB, MODEL_OVER_FILL_DB

    met = probe["conditions"]
    return [
        {"category": "probe", "target": f"dense beats the best classical fill by >= {MODEL_OVER_FILL_DB} dB in-mask",
         "value": met["model_over_best_fill_db"], "met": met["model_over_best_fill_met"]},
        {"category": "probe", "target": f"removing the context costs >= {CONTEXT_COST_DB} dB more than HiLo",
         "value": met["context_cost_db"], "met": met["context_cost_met"]},
    ]


def _settings_json(settings: BenchSettings) -> dict[str, Any]:
    values = asdict(settings)
    values["out"], values["engines_root"] = str(settings.out), str(settings.engines_root)
    values["planner"] = settings.planner.to_dict()
    values["bucket_table"] = {b.name: b.fraction for b in parse_buckets(settings.buckets)}
    return values


def _machine() -> dict[str, Any]:
    import os

    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__}



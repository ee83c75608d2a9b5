"""``hilo-export bench --model FOLDER``: HiLo against dense on a user's own ``FluxFillPipeline``.

For a saved diffusers Fill pipeline (a folder, or a model id already in the local hub cache) and
its engines (given, or built and reused), on the user's images, masks and prompts (``edit_set``):

- per-step latency of each category's bucket engines against ``full``, in interleaved rounds
  (``latency.time_categories``: median and IQR of per-round ratios; the FLOP ideal beside it);
- whole edits of the real pipeline under ``hilo_export.apply``, HiLo and dense (the same
  engines' ``full`` bucket) with the same seeds, timed by phase (``phases.PhaseTimer``);
- fidelity of HiLo against dense with the same seed (in-mask PSNR and SSIM, whole-image PSNR of
  the composited outputs) next to the seed-to-seed floor (dense against dense with the next
  seed), pooled per category and per edit with mean, sd, n and a 95% CI;
- pictures of a few edits per category, plots, ``report.json`` and ``report.md``
  (``pipeline_report``).

Edits planned into ``full`` are the dense edit itself: they are counted, never pooled with HiLo's.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..model.loading import model_folder
from ..planning.buckets import FULL
from ..reference.pipeline import EditResult
from .edit import EditOutcome, comparison_picture
from .edit_set import CATEGORY_LIMITS, SUITE, EditCase, load_cases, photo_files, read_prompts
from .fill_edit import check_engines, fill_engines, fill_token_size, load_fill_pipeline
from .latency import category_speed, lengths_json, time_categories
from .metrics import Pooled, psnr, ssim
from .phases import PHASES, EngineCalls, PhaseTimer
from .progress import Eta, machine, run_summary, summary_line
from .settings import BenchError
from .stats import paired_stats
from .timing import spread

log = logging.getLogger(__name__)

PSNR_CAP_DB = 100.0  # an edit identical to its reference counts as this in per-edit statistics


@dataclass
class PipelineBenchSettings:
    out: Path
    model: str
    engines: Path | None = None  # a built folder, or where to build one [default: engines_root/<model>-WxH]
    images: Path | None = None  # a folder of photos [default: the bundled evaluation photos]
    masks: Path | str = SUITE  # a folder of masks (white = edit), or "suite"
    prompt: str = ""
    prompts_file: Path | None = None  # one prompt per image, in the images' name order
    steps: int = 8
    seeds: tuple[int, ...] = (0, 1)
    backend: str = "ort"
    resolution: tuple[int, int] = (1024, 1024)  # when the engines are built here
    text_len: int | None = None  # when built here [default: the model's, 512 for Flux]
    per_category: int = 8  # suite masks per category (with --masks suite)
    edits_per_category: int = 4  # whole edits per category (HiLo, dense and the floor on every seed)
    pictures: int = 2  # comparison pictures per category
    repeats: int = 7
    length_groups: int = 3
    guidance_scale: float = 30.0
    engines_root: Path = Path("engines")

    def __post_init__(self) -> None:
        for name in ("steps", "repeats", "length_groups", "per_category", "edits_per_category"):
            if getattr(self, name) < 1:
                raise BenchError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if len(set(self.seeds)) < 2:
            raise BenchError("give at least two different seeds (e.g. --seeds 0,1): the seed-to-seed floor compares "
                             "dense edits of one seed with the next")

    @classmethod
    def quick(cls, out: Path, model: str, **overrides: Any) -> "PipelineBenchSettings":
        """Small sizes: 256 px, 32 text tokens, 2 steps, one edit per category. 15 latency rounds: a tiny model's
        engine call takes about a millisecond, so rounds are cheap, and one call slowed by another process weighs less."""
        values = dict(resolution=(256, 256), text_len=32, steps=2, per_category=4, edits_per_category=1, pictures=1,
                      repeats=15, length_groups=2)
        return cls(out, model, **{**values, **overrides})


@dataclass
class CategoryRuns:
    """What one category's whole edits measured."""

    phases: dict[str, list[dict[str, float]]] = field(default_factory=lambda: {"hilo": [], "dense": []})
    steps: dict[str, list[float]] = field(default_factory=lambda: {"hilo": [], "dense": []})
    pooled: Pooled = field(default_factory=Pooled)
    ssim: dict[str, list[float]] = field(default_factory=lambda: {"hilo_vs_dense": [], "noise_floor": []})
    edits: list[dict[str, Any]] = field(default_factory=list)
    outside_max_abs: int = 0


def run_pipeline_bench(settings: PipelineBenchSettings, progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Measure, write ``report.json``, ``report.md``, plots and pictures into ``settings.out``; return the report."""
    from ..runtime.pipeline import apply
    from ..runtime.runtime import HiLoRuntime
    from .pipeline_report import write_pipeline_report

    started = time.time()
    folder = model_folder(settings.model)
    token = fill_token_size(folder)
    prompts = read_prompts(settings.prompt, settings.prompts_file, len(photo_files(settings.images)))
    if settings.engines is not None and (settings.engines / "manifest.json").exists():
        engines = settings.engines
        progress(f"engines: reusing {engines}")
    else:
        engines = fill_engines(settings.model, settings.resolution, token, settings.engines, settings.engines_root,
                               settings.text_len, settings.backend, progress)
    runtime = HiLoRuntime.load(engines)
    check_engines(runtime, folder, settings.model, engines)
    manifest, size = runtime.manifest, tuple(runtime.resolution)
    cases = load_cases(settings.images, settings.masks, prompts, size, settings.per_category, progress)
    by_category = {name: [c for c in cases if c.category == name] for name in CATEGORY_LIMITS}

    plans, planner_s = {}, {}
    for name, items in by_category.items():
        plans[name], planner_s[name] = [], []
        for case in items:
            start = time.perf_counter()
            plans[name].append(runtime.plan(case.image, case.mask))
            planner_s[name].append(time.perf_counter() - start)
    timings = time_categories(runtime, plans, settings.length_groups, settings.repeats, progress)
    flops = _flops(folder, manifest["text_len"])

    pipe = load_fill_pipeline(folder)
    chosen = {name: items[: settings.edits_per_category] for name, items in by_category.items()}
    runs = {name: CategoryRuns() for name in CATEGORY_LIMITS}
    pictures_dir = settings.out / "pictures"
    pictures_dir.mkdir(parents=True, exist_ok=True)
    eta = Eta("whole edits (HiLo and dense)", sum(map(len, chosen.values())) * len(settings.seeds), progress, every_s=30.0)
    calls = EngineCalls(runtime)
    with apply(pipe, runtime, composite=True) as handle, calls.counting():
        if cases:  # warm-up, not measured: engine sessions open and torch allocates on the first calls
            calls.mode = "warm-up"
            smallest = min(cases, key=lambda c: c.mask_ratio)  # most likely to plan a compressed bucket
            for dense in (False, True):
                handle.dense = dense
                _edit(pipe, handle, smallest, 1, settings.seeds[0], settings.guidance_scale, manifest["text_len"])
        for name, items in chosen.items():
            for i, case in enumerate(items):
                entry = _run_case(pipe, handle, calls, case, settings, manifest["text_len"], runs[name], eta)
                if i < settings.pictures:
                    picture = pictures_dir / f"{name}-{i}.png"
                    comparison_picture(case.image, case.mask, entry.pop("_outcome")).save(picture)
                    entry["picture"] = str(picture.relative_to(settings.out))
                entry.pop("_outcome", None)
                runs[name].edits.append(entry)

    report: dict[str, Any] = {
        "kind": "pipeline",
        "settings": _settings_json(settings),
        "model": {"name": settings.model, "folder": str(folder), "class": "FluxFillPipeline",
                  "transformer": manifest["model"]["name"]},
        "engines": str(engines), "resolution": list(size), "grid": manifest["grid"], "text_len": manifest["text_len"],
        "backend": manifest["backend"], "sizing": manifest["planner"]["sizing"],
        "category_limits": {k: list(v) for k, v in CATEGORY_LIMITS.items()},
        "inputs": {"images": str(settings.images or "bundled evaluation photos"), "masks": str(settings.masks),
                   "prompts": sorted(set(prompts)),
                   "resized": sorted({f"{c.image_name} {c.source_size[0]}x{c.source_size[1]}" for c in cases if c.source_size})},
        "latency": {"rounds": settings.repeats, "lengths": lengths_json(timings, flops)},
        "engine_calls": calls.counts,
        "categories": [],
    }
    for name in CATEGORY_LIMITS:
        report["categories"].append(_category(name, by_category[name], plans[name], planner_s[name], timings, runs[name],
                                              flops, settings))
    report["all"] = _pooled_summary([r for r in runs.values()])
    report["machine"] = machine()
    report.update(run_summary(started))
    write_pipeline_report(report, settings.out)
    progress(summary_line(report))
    return report


def _run_case(pipe: Any, handle: Any, calls: EngineCalls, case: EditCase, settings: PipelineBenchSettings, text_len: int,
              runs: CategoryRuns, eta: Eta) -> dict[str, Any]:
    """HiLo and dense on every seed (their order alternating), then the metrics of this edit."""
    inside = case.mask
    hilo_by_seed, dense_by_seed = {}, {}
    for k, seed in enumerate(settings.seeds):
        for mode in (("hilo", "dense") if k % 2 == 0 else ("dense", "hilo")):  # alternate: order effects cancel
            calls.mode = mode
            handle.dense = mode == "dense"
            result, seconds = _edit(pipe, handle, case, settings.steps, seed, settings.guidance_scale, text_len)
            runs.phases[mode].append(seconds)
            runs.steps[mode].extend(result.step_seconds)
            (hilo_by_seed if mode == "hilo" else dense_by_seed)[seed] = result
            runs.outside_max_abs = max(runs.outside_max_abs, int(np.abs(
                result.image[~inside].astype(np.int16) - case.image[~inside].astype(np.int16)).max(initial=0)))
        eta.tick(f"{case.category}: {case.name}, seed {seed}")
    first = settings.seeds[0]
    plan = hilo_by_seed[first].plan
    entry: dict[str, Any] = {"name": case.name, "category": case.category, "image": case.image_name,
                             "mask_ratio": case.mask_ratio, "bucket": plan.bucket, "kept_ratio": plan.kept_ratio,
                             "compressed": plan.bucket != FULL,
                             "_outcome": EditOutcome(hilo_by_seed[first], dense_by_seed[first], Path("."))}
    vs_dense = [(hilo_by_seed[s].image, dense_by_seed[s].image) for s in settings.seeds]
    floor = [(dense_by_seed[a].image, dense_by_seed[b].image) for a, b in zip(settings.seeds, settings.seeds[1:])]
    for key, pairs in (("hilo_vs_dense", vs_dense), ("noise_floor", floor)):
        entry[f"psnr_mask_{key}"] = float(np.mean([_capped(psnr(a, b, inside)) for a, b in pairs]))
        entry[f"psnr_image_{key}"] = float(np.mean([_capped(psnr(a, b)) for a, b in pairs]))
        entry[f"ssim_mask_{key}"] = float(np.mean([ssim(a, b, inside) for a, b in pairs]))
        if entry["compressed"]:  # a full plan is the dense edit: never pooled with HiLo's
            for a, b in pairs:
                runs.pooled.add(f"mask_{key}", a, b, inside)
                runs.pooled.add(f"image_{key}", a, b, np.ones_like(inside))
            runs.ssim[key].append(entry[f"ssim_mask_{key}"])
    entry["psnr_mask_margin_over_floor"] = entry["psnr_mask_hilo_vs_dense"] - entry["psnr_mask_noise_floor"]
    return entry


def _edit(pipe: Any, handle: Any, case: EditCase, steps: int, seed: int, guidance_scale: float,
          text_len: int) -> tuple[EditResult, dict[str, float]]:
    import torch
    from PIL import Image

    timer = PhaseTimer()
    with timer.timing(pipe):
        out = pipe(prompt=case.prompt, image=Image.fromarray(case.image),
                   mask_image=Image.fromarray(np.where(case.mask, 255, 0).astype(np.uint8)),
                   height=case.image.shape[0], width=case.image.shape[1], num_inference_steps=steps,
                   guidance_scale=guidance_scale, max_sequence_length=text_len,
                   generator=torch.Generator().manual_seed(seed), output_type="np").images[0]
    edited = (out * 255).round().astype(np.uint8)  # as diffusers' numpy_to_pil rounds
    return EditResult(edited, timer.step_seconds, timer.seconds["total"], handle.plan), dict(timer.seconds)


def _category(name: str, cases: list[EditCase], plans: list[Any], planner_s: list[float], timings: Any, runs: CategoryRuns,
              flops: Any, settings: PipelineBenchSettings) -> dict[str, Any]:
    low, high = CATEGORY_LIMITS[name]
    entry: dict[str, Any] = {"name": name, "mask_ratio_limits": [low, high], "n_masks": len(cases)}
    if not cases:
        return entry
    names = [p.bucket for p in plans]
    planner = statistics.median(planner_s)
    entry.update(
        mask_ratio_mean=float(np.mean([c.mask_ratio for c in cases])),
        token_ratio_mean=float(np.mean([p.kept_ratio for p in plans])),
        bucket_mix={b: names.count(b) / len(names) for b in dict.fromkeys(names)},
        planner_ms_median=planner * 1e3,
        **category_speed(timings.weighted[name], timings.full, timings.times, plans, flops, None, settings.steps, planner),
    )
    if not runs.edits:
        return entry
    phases = {mode: {p: statistics.median(s[p] for s in runs.phases[mode]) for p in (*PHASES, "total")}
              for mode in ("hilo", "dense")}
    ratios = [d["total"] / h["total"] for h, d in zip(runs.phases["hilo"], runs.phases["dense"])]
    edit_ratio = spread(ratios)
    entry.update(
        phases_s=phases,
        edit_s_hilo_median=phases["hilo"]["total"], edit_s_dense_median=phases["dense"]["total"],
        edit_speedup=edit_ratio["median"], edit_speedup_q25=edit_ratio["q25"], edit_speedup_q75=edit_ratio["q75"],
        pipeline_step_s_hilo_median=statistics.median(runs.steps["hilo"]),
        pipeline_step_s_dense_median=statistics.median(runs.steps["dense"]),
    )
    entry.update(_pooled_summary([runs]))
    entry["edits"] = runs.edits
    return entry


def _pooled_summary(all_runs: list[CategoryRuns]) -> dict[str, Any]:
    """Pooled PSNR, mean SSIM and per-edit spread over the compressed edits of ``all_runs``."""
    pooled = Pooled()
    for runs in all_runs:
        for key in runs.pooled.sq:
            pooled.sq[key] = pooled.sq.get(key, 0.0) + runs.pooled.sq[key]
            pooled.px[key] = pooled.px.get(key, 0) + runs.pooled.px[key]
    edits = [e for runs in all_runs for e in runs.edits]
    compressed = [e for e in edits if e["compressed"]]
    result: dict[str, Any] = {"edits": len(edits), "edits_compressed": len(compressed),
                              "edits_full": len(edits) - len(compressed),
                              "outside_mask_max_abs_diff": max((r.outside_max_abs for r in all_runs), default=0)}
    for key in ("mask_hilo_vs_dense", "mask_noise_floor", "image_hilo_vs_dense", "image_noise_floor"):
        result[f"psnr_{key}"] = pooled.psnr(key)
    for key in ("hilo_vs_dense", "noise_floor"):
        values = [v for runs in all_runs for v in runs.ssim[key]]
        result[f"ssim_mask_{key}"] = float(np.mean(values)) if values else None
    result["per_edit"] = {key: paired_stats([e[key] for e in compressed]) for key in (
        "psnr_mask_hilo_vs_dense", "psnr_mask_noise_floor", "psnr_mask_margin_over_floor", "ssim_mask_hilo_vs_dense",
        "ssim_mask_noise_floor", "psnr_image_hilo_vs_dense")}
    return result


def _capped(value: float) -> float:
    return min(value, PSNR_CAP_DB)


def _flops(folder: Path, text_len: int) -> Any:
    """FLOPs of one step of the pipeline's transformer, counted on the meta device (no weights)."""
    from .flops import StepFlops

    config = {k: v for k, v in json.loads((folder / "transformer" / "config.json").read_text()).items()
              if not k.startswith("_")}
    return StepFlops.count(config, text_len)


def _settings_json(settings: PipelineBenchSettings) -> dict[str, Any]:
    values = asdict(settings)
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}

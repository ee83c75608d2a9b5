"""``hilo-export bench`` on the built-in models: latency and fidelity of HiLo against dense, per mask category.

Latency (``latency``): the engines of ``latency_model`` (flux-shaped by default: Flux.1 width and
text length, two blocks), timed per category in interleaved rounds; the ideal is the same ratio
in FLOPs (``flops.StepFlops``) at the timed lengths, and over every plan's length, also for
Flux.1-dev. Fidelity (``fidelity``): the reference model's engines on held-out images with the
mask suite, on the latency figures' token grid (64x64: the reference model's 8-px tokens at
512 px, Flux's 16-px at 1024), with the context probe. A user's own pipeline is benched by
``pipeline_bench``. This module assembles ``report.json`` and hands it to ``report``.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict
from typing import Any, Callable

import numpy as np

from ..model.loading import text_len_for
from ..planning.buckets import FULL, parse_buckets
from .fidelity import measure_fidelity, measure_probe
from .flops import FLUX1_DEV, StepFlops
from .latency import category_speed, lengths_json, measure_latency
from .masks import CATEGORY_RATIOS
from .progress import machine, run_summary, summary_line
from .report import write_report
from .settings import (
    ACHIEVED_TARGET,
    PSNR_TO_TRUTH_MARGIN_DB,
    PSNR_VS_DENSE_TARGET_DB,
    SPEEDUP_TARGETS,
    BenchSettings,
    model_config,
)
from .stats import speed_target
from .timing import spread

log = logging.getLogger(__name__)


def run_bench(settings: BenchSettings, progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    started = time.time()
    report: dict[str, Any] = {"settings": settings_json(settings), "machine": machine()}
    categories = {name: {"name": name, "mask_ratio_target": ratio} for name, ratio in CATEGORY_RATIOS.items()}
    if settings.latency:
        lat = measure_latency(settings, progress)
        manifest = lat.runtime.manifest
        flops = StepFlops.count(model_config(settings.latency_model), manifest["text_len"])
        dev = StepFlops.count(FLUX1_DEV, text_len_for("flux-shaped"))
        report["latency_grid"] = list(manifest["grid"])
        report["latency"] = {
            "model": settings.latency_model, "resolution": list(settings.latency_resolution),
            "grid": manifest["grid"], "text_len": manifest["text_len"], "backend": manifest["backend"],
            "sizing": manifest["planner"]["sizing"], "rounds": settings.repeats,
            "lengths": lengths_json(lat, flops),
            # other backends on the same feeds in the same rounds: the main backend's step time over theirs, per round
            "backends": {b: [{"sequence": x.sequence, "step_s_median": statistics.median(t),
                              "vs_main": spread([o / s for o, s in zip(lat.times[x], t)])} for x, t in bt.items()]
                         for b, bt in lat.other.items()},
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
                "paired": fid.pairs.summary(),
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
    # speed targets with their spread, met only when the IQR's lower end clears them; the checks list repeats them
    report["speed_targets"] = {f"speedup {c['name']}": speed_target(SPEEDUP_TARGETS[c["name"]], c["speedup"], c["speedup_q25"],
                                                                      c["speedup_q75"]) for c in report["categories"] if "speedup" in c}
    report["targets"] = _targets(report["categories"], report["speed_targets"]) + _probe_targets(report.get("probe"))
    report.update(run_summary(started))
    write_report(report, settings.out)
    progress(summary_line(report))
    return report


def _targets(categories: list[dict[str, Any]], speed_targets: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    checks = []
    for c in categories:
        name = c["name"]
        if "speedup" in c:  # met only when the IQR's lower end clears it
            spread_met = speed_targets[f"speedup {name}"]
            checks.append({"category": name, "target": f"speedup >= {SPEEDUP_TARGETS[name]}x (IQR's lower end)",
                           "value": c["speedup"], "threshold": spread_met["target"], "median": spread_met["median"],
                           "iqr": spread_met["iqr"], "met": spread_met["met"]})
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


def settings_json(settings: BenchSettings) -> dict[str, Any]:
    values = asdict(settings)
    values["out"], values["engines_root"] = str(settings.out), str(settings.engines_root)
    values["planner"] = settings.planner.to_dict()
    values["bucket_table"] = {b.name: b.fraction for b in parse_buckets(settings.buckets)}
    return values

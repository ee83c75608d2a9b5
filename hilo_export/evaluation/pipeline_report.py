"""The report of a pipeline bench (``pipeline_bench``): ``report.json``, ``report.md`` and its plots.

Field names that mean what they mean in the built-in bench's report (``speedup``, ``speedup_q25``,
``step_s_hilo``, ``psnr_mask_hilo_vs_dense``, ``psnr_mask_noise_floor``, ``ssim_mask_hilo_vs_dense``,
``bucket_mix``, ``token_ratio_mean``, ...) are shared; see the docs page "Validate on your model".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .phases import PHASES
from .report import bar_chart, format_db, write_report_files

PHASE_LABELS = {"planner": "planner", "text_encoders": "text encoders", "vae_encode": "VAE encode",
                "denoising": "denoising", "vae_decode": "VAE decode", "other": "other"}


def write_pipeline_report(report: dict[str, Any], out: Path) -> None:
    write_report_files(report, out, _plots, pipeline_markdown)


def _s(value: float) -> str:
    return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"


def _stats(row: dict[str, Any] | None, digits: int = 2) -> str:
    if not row or row["mean"] is None:
        return "-"
    if row["ci95"] is None:
        return f"{row['mean']:.{digits}f} (n {row['n']})"
    low, high = row["ci95"]
    return f"{row['mean']:.{digits}f} ± {row['sd']:.{digits}f} (n {row['n']}, CI {low:.{digits}f} to {high:.{digits}f})"


def pipeline_markdown(report: dict[str, Any], plots: list[str] | None = None) -> str:
    s, cats = report["settings"], [c for c in report["categories"] if c["n_masks"]]
    backend = report["backend"]
    lines = [
        "# HiLo bench report: your pipeline", "",
        f"Model `{report['model']['name']}` (FluxFillPipeline), engines `{report['engines']}` at "
        f"{report['resolution'][0]}x{report['resolution'][1]} (grid {report['grid'][0]}x{report['grid'][1]}, "
        f"{report['text_len']} text tokens), {backend['name']} {backend['version']} on {backend['device']}, "
        f"`{report['sizing']}` sizing; {s['steps']} steps, seeds {s['seeds']}, guidance {s['guidance_scale']}.",
        f"Images: {report['inputs']['images']}; masks: {report['inputs']['masks']}; prompts: "
        + (", ".join(f"\"{p}\"" for p in report["inputs"]["prompts"]) or "none") + ".",
    ]
    if report["inputs"]["resized"]:
        lines.append("Resized to the engines' size as the pipeline does (Lanczos, masks binarized at 0.5): "
                     + ", ".join(report["inputs"]["resized"]) + ".")
    limits = ", ".join(f"{k} {lo:.1%}-{hi:.1%}" for k, (lo, hi) in report["category_limits"].items())
    lines += [f"Categories by mask ratio: {limits}.", "",
              "## Per-step latency of the bucket engines", "",
              f"Each category's plans stand as the weighted lengths below, timed with `full` in "
              f"{report['latency']['rounds']} interleaved rounds; speedup = median over rounds of full's step over the "
              "category's weighted step in that round, with the interquartile range (IQR) of the per-round ratios. "
              "Ideal = the same ratio in FLOPs.", "",
              "| category | masks | mask ratio | tokens seen | bucket mix | timed lengths (weight) | step HiLo | step dense "
              "| speedup (median) | IQR (q25-q75) | ideal (FLOPs) | planner |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cats:
        mix = ", ".join(f"{b} {v:.0%}" for b, v in c["bucket_mix"].items())
        timed = ", ".join(f"{t['bucket']} {t['sequence']} ({t['weight']:.2f})" for t in c["timed_lengths"])
        lines.append(f"| {c['name']} | {c['n_masks']} | {c['mask_ratio_mean']:.1%} | {c['token_ratio_mean']:.1%} | {mix} "
                     f"| {timed} | {_s(c['step_s_hilo'])} | {_s(c['step_s_dense'])} | **{c['speedup']:.2f}x** "
                     f"| {c['speedup_iqr']:.2f} ({c['speedup_q25']:.2f}-{c['speedup_q75']:.2f}) "
                     f"| {c['ideal_speedup']:.2f}x | {c['planner_ms_median']:.1f} ms |")
    lines += ["", "| engine call | image tokens | step (median) | speedup over full (median, IQR) | ideal (FLOPs) |",
              "|---|---|---|---|---|"]
    for x in report["latency"]["lengths"]:
        sp = x["speedup"]
        lines.append(f"| {x['bucket']}, {x['kept']} kept | {x['sequence']} | {_s(x['step_s_median'])} "
                     f"| {sp['median']:.2f}x ({sp['iqr']:.2f}) | {x['ideal_speedup']:.2f}x |")
    edited = [c for c in cats if "phases_s" in c]
    if edited:
        lines += ["", "## Whole edits by phase (median seconds per edit)", "",
                  "HiLo and dense run the real pipeline under `hilo_export.apply` on the same engines (dense: the `full` "
                  "bucket), alternating which goes first; whole-edit speedup = median of dense's time over HiLo's, per edit "
                  "and seed.", "",
                  "| category | run | " + " | ".join(PHASE_LABELS[p] for p in PHASES) + " | whole edit | speedup (q25-q75) |",
                  "|---|---|" + "---|" * (len(PHASES) + 2)]
        for c in edited:
            for mode in ("hilo", "dense"):
                row = c["phases_s"][mode]
                speed = (f"**{c['edit_speedup']:.2f}x** ({c['edit_speedup_q25']:.2f}-{c['edit_speedup_q75']:.2f})"
                         if mode == "hilo" else "")
                lines.append(f"| {c['name']} | {'HiLo' if mode == 'hilo' else 'dense'} | "
                             + " | ".join(_s(row[p]) for p in PHASES) + f" | {_s(row['total'])} | {speed} |")
        lines += ["", "## Fidelity: HiLo against dense, next to the seed-to-seed floor", "",
                  "Same seed for HiLo and dense; the floor compares dense edits of one seed with the next. PSNR (dB) "
                  "pooled over the category's compressed edits (edits planned into `full` are the dense edit: counted "
                  "apart); per edit: mean ± sd (n, 95% CI) of each edit's value, and of HiLo's margin over the floor "
                  "(HiLo vs dense minus floor, paired by edit; positive: HiLo is closer to dense than another seed is).",
                  "",
                  "| category | edits compressed / full | in-mask PSNR HiLo vs dense | floor | whole-image PSNR HiLo vs dense "
                  "| floor | SSIM in mask HiLo vs dense | floor | per edit: in-mask PSNR HiLo vs dense | per edit: margin "
                  "over floor | outside max diff |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in [*edited, {"name": "all", **report["all"]}]:
            pe = c["per_edit"]
            if not c["edits_compressed"]:
                lines.append(f"| {c['name']} | 0 / {c['edits_full']} | every edit planned into `full`: the dense edit itself "
                             + "| - " * 8 + f"| {c['outside_mask_max_abs_diff']} |")
                continue
            lines.append(
                f"| {c['name']} | {c['edits_compressed']} / {c['edits_full']} | {format_db(c['psnr_mask_hilo_vs_dense'])} "
                f"| {format_db(c['psnr_mask_noise_floor'])} | {format_db(c['psnr_image_hilo_vs_dense'])} "
                f"| {format_db(c['psnr_image_noise_floor'])} | {_opt(c['ssim_mask_hilo_vs_dense'])} "
                f"| {_opt(c['ssim_mask_noise_floor'])} | {_stats(pe['psnr_mask_hilo_vs_dense'])} "
                f"| {_stats(pe['psnr_mask_margin_over_floor'])} | {c['outside_mask_max_abs_diff']} |")
        lines += ["", "| edit | category | mask ratio | bucket | tokens seen | in-mask PSNR HiLo vs dense | floor "
                  "| SSIM HiLo vs dense | picture |", "|---|---|---|---|---|---|---|---|---|"]
        for c in edited:
            for e in c["edits"]:
                picture = f"![{e['name']}]({e['picture']})" if e.get("picture") else ""
                vs_dense = (f"{e['psnr_mask_hilo_vs_dense']:.2f} | {e['psnr_mask_noise_floor']:.2f} "
                            f"| {e['ssim_mask_hilo_vs_dense']:.4f}") if e["compressed"] else \
                    f"= dense (full) | {e['psnr_mask_noise_floor']:.2f} | ="
                lines.append(f"| {e['name']} | {e['category']} | {e['mask_ratio']:.1%} | {e['bucket']} | {e['kept_ratio']:.1%} "
                             f"| {vs_dense} | {picture} |")
    calls = report["engine_calls"]
    lines += ["", "Engine calls per bucket: " + "; ".join(
        f"{mode}: " + ", ".join(f"{b} {n}" for b, n in sorted(by.items())) for mode, by in calls.items()) + "."]
    lines.append("")
    for plot in plots or []:
        lines.append(f"![{plot}]({plot})")
    lines.append(f"\nWall time of the bench: {report['wall_s']:.0f} s; peak memory {report['peak_memory_gb']:.1f} GB.\n")
    return "\n".join(lines)


def _opt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _plots(report: dict[str, Any], out: Path) -> list[str]:
    cats = [c for c in report["categories"] if c["n_masks"]]
    if not cats:
        return []
    names = [c["name"] for c in cats]
    title = f"{report['model']['name'].rstrip('/').split('/')[-1]} {report['resolution'][0]}px, {report['backend']['name']}"
    series = {"per step (median of rounds)": [c["speedup"] for c in cats], "per step, ideal (FLOPs)": [c["ideal_speedup"] for c in cats]}
    spans = {"per step (median of rounds)": [(c["speedup_q25"], c["speedup_q75"]) for c in cats]}
    edited = [c for c in cats if "edit_speedup" in c]
    if len(edited) == len(cats):
        series["whole edit"] = [c["edit_speedup"] for c in cats]
        spans["whole edit"] = [(c["edit_speedup_q25"], c["edit_speedup_q75"]) for c in cats]
    bar_chart(out / "speedup.png", names, series, "speedup vs dense", title, spans=spans)
    written = ["speedup.png"]
    if len(edited) == len(cats):
        keys = {"in-mask HiLo vs dense": "psnr_mask_hilo_vs_dense", "in-mask floor (seed vs seed)": "psnr_mask_noise_floor",
                "whole image HiLo vs dense": "psnr_image_hilo_vs_dense", "whole image floor": "psnr_image_noise_floor"}
        series = {label: [c.get(key) or 0.0 for c in cats] for label, key in keys.items()}  # identical: drawn at 0
        groups = [c["name"] if c["edits_compressed"] else f"{c['name']}\n(all edits ran full)" for c in cats]
        bar_chart(out / "fidelity.png", groups, series, "PSNR (dB), pooled", title)
        written.append("fidelity.png")
    return written

"""The bench report: ``report.json``, ``report.md`` and PNG plots in one folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from ..files import atomic_path
from .settings import PSNR_VS_DENSE_TARGET_DB, SPEEDUP_TARGETS


def write_report(report: dict[str, Any], out: Path) -> None:
    write_report_files(report, out, _plots, markdown)


def write_report_files(report: dict[str, Any], out: Path, draw: Callable[[dict[str, Any], Path], list[str]],
                       to_markdown: Callable[[dict[str, Any], list[str]], str]) -> None:
    """``report.json``, the plots ``draw`` makes, then ``report.md`` linking them; each file written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    plots = draw(report, out)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(to_markdown(report, plots))


def format_db(value: Any, digits: int = 2, unit: str = "") -> str:
    """A PSNR (or other number) for a table; None is how ``Pooled.psnr`` says two edits are identical."""
    if value is None:
        return "identical"
    return f"{value:.{digits}f}{unit}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _seconds(value: float) -> str:
    """Three significant digits: a 40 ms quick-bench edit is 0.04 s, not "0.0 s"."""
    return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"


def markdown(report: dict[str, Any], plots: list[str] | None = None) -> str:
    s = report["settings"]
    lines = ["# HiLo bench report", ""]
    cats = report["categories"]
    if "latency" in report:
        lat = report["latency"]
        lines += [
            f"Per-step latency: `{lat['model']}` at {lat['resolution'][0]}x{lat['resolution'][1]} "
            f"(grid {lat['grid'][0]}x{lat['grid'][1]}, {lat['text_len']} text tokens), {lat['backend']['name']} "
            f"{lat['backend']['version']} on {lat['backend']['device']}, `{lat['sizing']}` sizing. Each category's plans "
            f"({_count(s['per_category'], 'mask')} per category over the evaluation images) stand as the weighted sequence lengths below, "
            f"timed with `full` in {_count(lat['rounds'], 'interleaved round')} in one process; speedup = median over "
            "rounds of full's step over the category's weighted step in the same round, with the interquartile range "
            "(IQR) of those per-round ratios. Ideal = the same ratio in FLOPs at the timed lengths (and over every plan).",
            "",
            "| category | mask ratio | tokens seen | bucket mix | timed lengths (weight) | step HiLo | step dense "
            "| speedup (median) | IQR (q25-q75) | ideal (FLOPs) | achieved/ideal | ideal, every plan | Flux.1-dev ideal "
            "| planner | edit HiLo / dense (composed) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in cats:
            if "speedup" not in c:
                continue
            order = [*s.get("bucket_table", {}), "full"]  # the bucket table's order: s, m, l, full
            mix = ", ".join(f"{b} {v:.0%}" for b, v in sorted(
                c["bucket_mix"].items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
            timed = ", ".join(f"{t['sequence']} ({t['weight']:.2f})" for t in c["timed_lengths"])
            lines.append(
                f"| {c['name']} | {c['mask_ratio_mean']:.2%} | {c['token_ratio_mean']:.1%} | {mix} | {timed} "
                f"| {c['step_s_hilo']:.3f} s | {c['step_s_dense']:.3f} s | **{c['speedup']:.2f}x** "
                f"| {c['speedup_iqr']:.2f} ({c['speedup_q25']:.2f}-{c['speedup_q75']:.2f}) | {c['ideal_speedup']:.2f}x "
                f"| {c['achieved_over_ideal']:.2f} | {c['ideal_speedup_plans']:.2f}x | {c['flux1_dev_ideal_speedup']:.2f}x "
                f"| {c['planner_ms_median']:.1f} ms | {_seconds(c['edit_s_hilo_composed'])} / {_seconds(c['edit_s_dense_composed'])} |"
            )
        lines += ["", "| engine call | image tokens | step (median) | speedup (median, IQR) | ideal (FLOPs) |",
                  "|---|---|---|---|---|"]
        for x in lat["lengths"]:
            sp = x["speedup"]
            lines.append(f"| {x['bucket']}, {x['kept']} kept | {x['sequence']} | {x['step_s_median']:.3f} s "
                         f"| {sp['median']:.2f}x ({sp['iqr']:.2f}) | {x['ideal_speedup']:.2f}x |")
        lines.append("")
    if any("fidelity" in c for c in cats):
        res = s["fidelity_resolution"]
        lines += [
            f"Fidelity: the reference model at {res[0]}x{res[1]} (grid {_grid(report.get('fidelity_grid'))}; latency grid "
            f"{_grid(report.get('latency_grid'))}), {s['steps']} steps, held-out images "
            f"{', '.join(s.get('fidelity_images') or s['images'])}, {s['fidelity_masks']} masks per category, seeds {s['seeds']}; PSNR pooled over "
            f"the compressed edits of a category (dB; edits planned into `full` are the dense edit and are counted apart), "
            f"SSIM averaged; ring = mask pixels within 8 px of its border.",
            "",
            "| category | kept tokens | edits compressed / full | PSNR HiLo vs dense | PSNR HiLo vs truth | PSNR dense vs truth "
            "| noise floor (seed vs seed) | SSIM HiLo vs dense | SSIM HiLo / dense vs truth | ring PSNR HiLo vs dense "
            "| ring HiLo / dense vs truth | outside max diff | edit HiLo / dense |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in cats:
            if "fidelity" not in c:
                continue
            f = c["fidelity"]
            lines.append(
                f"| {c['name']} | {f['token_ratio_mean']:.1%} | {f['edits_compressed']} / {f['edits_full']} "
                f"| {format_db(c['psnr_mask_hilo_vs_dense'])} "
                f"| {format_db(c['psnr_mask_hilo_vs_truth'])} | {format_db(c['psnr_mask_dense_vs_truth'])} "
                f"| {format_db(c.get('psnr_mask_noise_floor'))} | {format_db(c['ssim_mask_hilo_vs_dense'], 4)} "
                f"| {format_db(c['ssim_mask_hilo_vs_truth'], 4)} / {format_db(c['ssim_mask_dense_vs_truth'], 4)} "
                f"| {format_db(c['psnr_ring_hilo_vs_dense'])} | {format_db(c['psnr_ring_hilo_vs_truth'])} / {format_db(c['psnr_ring_dense_vs_truth'])} "
                f"| {f['outside_mask_max_abs_diff']} | {f['edit_s_hilo_median']:.2f} s / {f['edit_s_dense_median']:.2f} s |"
            )
        lines.append("")
    paired = [(c["name"], c["fidelity"]["paired"]) for c in report["categories"] if c.get("fidelity", {}).get("paired")]
    if paired:
        lines += ["Per edit, paired by mask, image and seed (compressed edits): mean ± sd (n, 95% CI).", "",
                  "| category | in-mask PSNR HiLo vs dense | truth gap (dense minus HiLo, vs truth) |", "|---|---|---|"]
        for name, p in paired:
            lines.append(f"| {name} | {_paired_cell(p['psnr_mask_hilo_vs_dense'])} | {_paired_cell(p['truth_gap'])} |")
        lines.append("")
    if "probe" in report:
        lines += _probe_lines(report["probe"])
    lines += ["## Targets", "", "Speed targets count as met only when the IQR's lower end clears them.", "",
              "| category | target | value | met |", "|---|---|---|---|"]
    for t in report["targets"]:
        value = "identical" if t["value"] is None else f"{t['value']:.2f}" if isinstance(t["value"], float) else t["value"]
        if "iqr" in t:
            value = f"{t['median']:.2f} (IQR {t['iqr'][0]:.2f}-{t['iqr'][1]:.2f})"
        lines.append(f"| {t['category']} | {t['target']} | {value} | {'yes' if t['met'] else '**no**'} |")
    lines.append("")
    for plot in plots or []:
        lines.append(f"![{plot}]({plot})")
    memory = f"; peak memory {report['peak_memory_gb']:.1f} GB" if "peak_memory_gb" in report else ""
    lines.append(f"\nWall time of the bench: {report['wall_s']:.0f} s{memory}.\n")
    return "\n".join(lines)


def _paired_cell(d: dict[str, Any]) -> str:
    if not d.get("n"):
        return "-"
    if d["n"] < 2:
        return f"{d['mean']:.2f} dB (n 1)"
    return f"{d['mean']:+.2f} ± {d['sd']:.2f} dB (n {d['n']}, {d['ci_low']:+.2f}..{d['ci_high']:+.2f})"


def _grid(grid: list[int] | None) -> str:
    return "?" if grid is None else f"{grid[0]}x{grid[1]}"


def _probe_lines(probe: dict[str, Any]) -> list[str]:
    cond = probe["conditions"]
    lines = [
        f"Context probe: {probe['images']} procedural images at {probe['size'][0]}x{probe['size'][1]} (grid "
        f"{_grid(probe['grid'])}), {probe['mask_category']} masks; in-mask PSNR pooled (dB), "
        f"{probe['edits_full']} edits planned into `full` left out of the HiLo columns.",
        "",
        "| family | dense vs truth | best fill vs truth | HiLo vs dense | core only vs dense |",
        "|---|---|---|---|---|",
    ]
    for name, row in [("all", probe), *probe["families"].items()]:
        lines.append(f"| {name} | {format_db(row['psnr_mask_dense_vs_truth'])} | {format_db(row['psnr_mask_best_fill_vs_truth'])} "
                     f"({row['best_fill']}) | {format_db(row['psnr_mask_hilo_vs_dense'])} "
                     f"| {format_db(row['psnr_mask_core_only_vs_dense'])} |")
    lines += ["", f"Model over the best fill: {format_db(cond['model_over_best_fill_db'])} dB; removing the context costs "
              f"{format_db(cond['context_cost_db'])} dB more than HiLo.", ""]
    return lines


def _plots(report: dict[str, Any], out: Path) -> list[str]:
    cats = report["categories"]
    names = [c["name"] for c in cats]
    written = []
    if all("speedup" in c for c in cats):
        series = {"measured (median of rounds)": [c["speedup"] for c in cats], "ideal (FLOPs)": [c["ideal_speedup"] for c in cats],
                  "Flux.1-dev ideal": [c["flux1_dev_ideal_speedup"] for c in cats]}
        lat = report["latency"]
        bar_chart(out / "speedup.png", names, series, "per-step speedup vs dense",
                  f"{lat['model']} {lat['resolution'][0]}px, {lat['backend']['name']}",
                  targets={i: SPEEDUP_TARGETS[n] for i, n in enumerate(names) if n in SPEEDUP_TARGETS},
                  target_label="target speedup",
                  spans={"measured (median of rounds)": [(c["speedup_q25"], c["speedup_q75"]) for c in cats]})
        written.append("speedup.png")
    if all("fidelity" in c for c in cats):
        keys = {"HiLo vs dense": "psnr_mask_hilo_vs_dense", "HiLo vs truth": "psnr_mask_hilo_vs_truth",
                "dense vs truth": "psnr_mask_dense_vs_truth", "dense seed vs seed": "psnr_mask_noise_floor"}
        series = {label: [c.get(key) or 0.0 for c in cats] for label, key in keys.items()}  # identical: drawn at 0
        bar_chart(out / "fidelity.png", names, series, "in-mask PSNR (dB)", "reference model, held-out images",
                  targets={i: PSNR_VS_DENSE_TARGET_DB for i in range(len(names))}, target_label="HiLo vs dense target")
        written.append("fidelity.png")
    return written


def bar_chart(path: Path, groups: list[str], series: dict[str, list[float]], ylabel: str, title: str,
              targets: dict[int, float] | None = None, target_label: str = "target",
              spans: dict[str, list[tuple[float, float]]] | None = None) -> None:
    """Grouped bars: one group per category, one bar per series; ``targets``: a dashed line over each
    group (index -> value); ``spans``: (low, high) whiskers on a series' bars (the IQR of rounds).
    The legend sits outside the axes so it never hides a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(groups))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(7.5, 3.4), dpi=100)
    for i, (label, values) in enumerate(series.items()):
        yerr = None
        if spans and label in spans:  # whiskers from the bar's value to each end of its span
            yerr = np.array([[max(0.0, v - lo) for v, (lo, _) in zip(values, spans[label])],
                             [max(0.0, hi - v) for v, (_, hi) in zip(values, spans[label])]])
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label, yerr=yerr, capsize=3 if yerr is not None else 0)
    for n, (i, value) in enumerate(sorted((targets or {}).items())):
        ax.hlines(value, i - 0.45, i + 0.45, colors="black", linestyles="--", linewidth=1.2,
                  label=target_label if n == 0 else None)
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

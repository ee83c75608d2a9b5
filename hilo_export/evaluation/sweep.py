"""``hilo-export bench --sweep``: speedup against fidelity for planner settings, to choose defaults from data.

Each variant changes one knob from the defaults. Speed: the FLOP-ideal per-step speedup on
the latency model's grid (1024x1024 flux-shaped by default), from the bucket mix of the
planning suite. Fidelity: in-mask PSNR of HiLo vs dense edits of the reference model,
run in torch (``PlannedTransformer``) so no engines are built per variant.

``freq_threshold`` is not swept: it labels kept tokens high-frequency or fill, but the
bucket fill always takes the highest scores, so it cannot change what the DiT sees.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..files import atomic_path
from ..model.loading import text_len_for, token_size_for
from ..planning.buckets import FULL
from ..planning.plan import PlannerConfig, plan_tokens
from .bench import PSNR_VS_DENSE_TARGET_DB, BenchSettings, Fidelity, eval_image, plan_categories
from .flops import StepFlops
from .masks import CATEGORY_RATIOS, mask_suite

DEFAULT_BUCKETS = "s,m,l"


@dataclass(frozen=True)
class Variant:
    label: str
    config: PlannerConfig
    buckets: str = DEFAULT_BUCKETS


def variants() -> list[Variant]:
    base = PlannerConfig()
    return [
        Variant("defaults", base),
        Variant("dilation 0", replace(base, dilation=0)),
        Variant("dilation 2", replace(base, dilation=2)),
        Variant("low-freq factor 8", replace(base, lowfreq_factor=8)),
        Variant("no low-freq tokens", replace(base, lowfreq_factor=None)),
        Variant("region radius 0", replace(base, region_radius=0)),
        Variant("buckets 0.3/0.6/0.85", base, "s=0.3,m=0.6,l=0.85"),
        Variant("buckets 0.15/0.35/0.6", base, "s=0.15,m=0.35,l=0.6"),
        Variant("dilation 0, buckets 0.12/0.3/0.55", replace(base, dilation=0), "s=0.12,m=0.3,l=0.55"),
    ]


def run_sweep(settings: BenchSettings, progress: Callable[[str], None] = print) -> dict[str, Any]:
    from ..reference.model import TOKEN_SIZE
    from ..reference.pipeline import ReferenceInpaintPipeline
    from ..runtime.pipeline import PlannedTransformer
    from .bench import _model_config

    flops = StepFlops.count(_model_config(settings.latency_model), text_len_for(settings.latency_model))
    latency_token = token_size_for(settings.latency_model)
    latency_grid = (settings.latency_resolution[1] // latency_token) * (settings.latency_resolution[0] // latency_token)
    pipe = ReferenceInpaintPipeline.from_reference()
    pipe.set_progress_bar_config(disable=True)
    stock = pipe.transformer
    suite = mask_suite(settings.fidelity_resolution, settings.fidelity_masks, seed=1)
    pictures = {name: eval_image(name, settings.fidelity_resolution) for name in settings.images}
    seed = settings.seeds[0]

    def edit(variant: Variant | None, image, mask):
        config = variant.config if variant else PlannerConfig()
        pipe.transformer = PlannedTransformer(stock, TOKEN_SIZE, variant.buckets if variant else FULL, config, fill="zero")
        try:
            return pipe(image, mask, steps=settings.steps, seed=seed, dense=variant is None)
        finally:
            pipe.transformer = stock

    dense = {(m.name, name): edit(None, image, m.mask > 0).image for m in suite for name, image in pictures.items()}
    results = []
    for variant in variants():
        def plan(image, mask, variant=variant):
            return plan_tokens(image, mask, latency_token, variant.buckets, variant.config)

        planned = plan_categories(plan, settings.latency_resolution, settings.per_category, settings.images)
        entry: dict[str, Any] = {"label": variant.label, "planner": variant.config.to_dict(), "buckets": variant.buckets,
                                 "categories": {}}
        for cat in planned:
            mix = cat.bucket_mix()
            cost = sum(share * _sequence_flops(flops, b, latency_grid, cat) for b, share in mix.items())
            fid = Fidelity()
            for item in (m for m in suite if m.category == cat.name):
                for name, image in pictures.items():
                    hilo = edit(variant, image, item.mask > 0)
                    fid.add("mask_hilo_vs_dense", hilo.image, dense[(item.name, name)], item.mask > 0)
                    fid.add("mask_hilo_vs_truth", hilo.image, image, item.mask > 0)
                    fid.kept_ratio.append(hilo.plan.kept_ratio)
            entry["categories"][cat.name] = {
                "ideal_speedup": flops(latency_grid) / cost,
                "bucket_mix": mix,
                "token_ratio_mean": float(np.mean([p.kept_ratio for p in cat.plans])),
                "psnr_mask_hilo_vs_dense": fid.psnr("mask_hilo_vs_dense"),
                "psnr_mask_hilo_vs_truth": fid.psnr("mask_hilo_vs_truth"),
                "fidelity_token_ratio_mean": float(np.mean(fid.kept_ratio)),
            }
        progress(f"sweep {variant.label}: " + ", ".join(
            f"{c} {v['ideal_speedup']:.2f}x / {v['psnr_mask_hilo_vs_dense'] or float('inf'):.1f} dB"
            for c, v in entry["categories"].items()))
        results.append(entry)
    sweep = {"settings": {**asdict(settings), "out": str(settings.out), "engines_root": str(settings.engines_root)},
             "variants": results}
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "sweep.json") as tmp:
        tmp.write_text(json.dumps(sweep, indent=1) + "\n")
    _plot(sweep, out / "sweep.png")
    with atomic_path(out / "sweep.md") as tmp:
        tmp.write_text(sweep_markdown(sweep))
    return sweep


def _sequence_flops(flops: StepFlops, bucket: str, n_tokens: int, cat) -> float:
    """FLOPs of one step in ``bucket``: its capacity (the same for every plan in it)."""
    capacity = next(p.capacity for p in cat.plans if p.bucket == bucket)
    return flops(capacity if bucket != FULL else n_tokens)


def sweep_markdown(sweep: dict[str, Any]) -> str:
    lines = ["| variant | " + " | ".join(f"{c}: ideal speedup / PSNR HiLo vs dense" for c in CATEGORY_RATIOS) + " |",
             "|---|" + "---|" * len(CATEGORY_RATIOS)]
    for v in sweep["variants"]:
        cells = []
        for c in CATEGORY_RATIOS:
            e = v["categories"][c]
            db = "identical" if e["psnr_mask_hilo_vs_dense"] is None else f"{e['psnr_mask_hilo_vs_dense']:.1f} dB"
            cells.append(f"{e['ideal_speedup']:.2f}x / {db}")
        lines.append(f"| {v['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chosen_variant(sweep: dict[str, Any], floor_db: float = PSNR_VS_DENSE_TARGET_DB) -> str | None:
    """The fastest variant (mean ideal speedup over the categories) whose edits stay at least
    ``floor_db`` from the dense ones in every category: how the default bucket table was picked."""
    def psnr(e: dict[str, Any]) -> float:
        return float("inf") if e["psnr_mask_hilo_vs_dense"] is None else e["psnr_mask_hilo_vs_dense"]

    fine = [v for v in sweep["variants"] if all(psnr(e) >= floor_db for e in v["categories"].values())]
    best = max(fine, key=lambda v: np.mean([e["ideal_speedup"] for e in v["categories"].values()]), default=None)
    return best["label"] if best else None


def _plot(sweep: dict[str, Any], path: Path, floor_db: float = PSNR_VS_DENSE_TARGET_DB) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = chosen_variant(sweep, floor_db)
    markers = "osD^v<>pPX*h"
    fig, axes = plt.subplots(1, len(CATEGORY_RATIOS), figsize=(12, 4.4), dpi=100, sharey=True)
    for ax, category in zip(axes, CATEGORY_RATIOS):
        for i, v in enumerate(sweep["variants"]):
            e = v["categories"][category]
            db = e["psnr_mask_hilo_vs_dense"] or 60.0  # identical edits drawn at the top
            # one colour and marker per variant, named once in the shared legend: no labels to overlap
            ax.scatter(e["ideal_speedup"], db, s=26, marker=markers[i % len(markers)], color=f"C{i % 10}", label=v["label"])
            if v["label"] == chosen:
                ax.scatter(e["ideal_speedup"], db, s=160, facecolors="none", edgecolors="black", linewidths=1.5,
                           label=f"chosen (fastest >= {floor_db:.0f} dB everywhere)")
        ax.axhline(floor_db, color="gray", linestyle="--", linewidth=1, label=f"{floor_db:.0f} dB floor")
        ax.set_title(f"{category} masks")
        ax.set_xlabel("ideal per-step speedup (FLOPs)")
    axes[0].set_ylabel("in-mask PSNR HiLo vs dense (dB)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.045 * ((len(labels) - 1) // 4), 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

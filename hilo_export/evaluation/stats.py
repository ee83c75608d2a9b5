"""Paired differences with their spread, and the rule that picks planner defaults from them.

A comparison of two selections or planner variants is paired: the same case (image and mask)
and noise seed edited both ways, one difference per pair. ``paired`` summarizes the differences
as mean, standard deviation, n and a 95% confidence interval of the mean (Student's t); pooled
means hide exactly the spread that decides whether a difference is real.

``choose_variant`` is the defaults rule: among the variants whose fidelity is not worse than
the most faithful variant's by ``margin_db`` (the 95% CI of the paired difference lies above
``-margin_db``), the fastest; equally fast ones by mean fidelity.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import EvaluationError

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Paired:
    """Summary of per-pair differences ``a - b``."""

    mean: float
    sd: float
    n: int
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in asdict(self).items()}


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student's t quantile for the mean of ``n`` values (inf below 2: no interval)."""
    if n < 2:
        return math.inf
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, n - 1))


def summarize(differences: Iterable[float], confidence: float = CONFIDENCE) -> Paired:
    """Mean, sample standard deviation, n and the ``confidence`` interval of the mean."""
    values = np.asarray([float(d) for d in differences], dtype=np.float64)
    n = int(values.size)
    if n == 0:
        return Paired(math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(values.mean())
    sd = float(values.std(ddof=1)) if n > 1 else math.nan
    half = t_quantile(n, confidence) * sd / math.sqrt(n) if n > 1 else math.inf
    return Paired(mean, sd, n, mean - half, mean + half)


def paired_stats(differences: Iterable[float]) -> dict[str, Any]:
    """``summarize`` as report.json gives it: {mean, sd, n, ci95: [low, high]}, None where fewer
    values leave it undefined (no spread below two)."""
    values = [float(v) for v in differences]
    if any(not math.isfinite(v) for v in values):
        raise EvaluationError("paired_stats needs finite values; cap infinite PSNRs before")
    summary = summarize(values)
    if summary.n < 2:
        return {"mean": summary.mean if summary.n else None, "sd": None, "n": summary.n, "ci95": None}
    return {"mean": summary.mean, "sd": summary.sd, "n": summary.n, "ci95": [summary.ci_low, summary.ci_high]}


def paired(a: Mapping[Any, float | None], b: Mapping[Any, float | None], confidence: float = CONFIDENCE) -> Paired:
    """``a - b`` over the keys (case, seed, ...) both have a finite value for."""
    keys = [k for k in a if k in b and _finite(a[k]) and _finite(b[k])]
    return summarize((a[k] - b[k] for k in keys), confidence)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


@dataclass(frozen=True)
class Choice:
    chosen: str
    most_faithful: str
    margin_db: float
    versus_best: dict[str, Paired]  # each variant minus the most faithful, paired
    acceptable: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "most_faithful": self.most_faithful, "margin_db": self.margin_db,
                "acceptable": self.acceptable, "versus_most_faithful": {k: v.to_dict() for k, v in self.versus_best.items()}}


def choose_variant(fidelity: Mapping[str, Mapping[Any, float]], speed: Mapping[str, float],
                   margin_db: float = 0.2, confidence: float = CONFIDENCE) -> Choice:
    """The defaults rule.

    ``fidelity``: per variant, per pairing key (case, seed), a fidelity in dB (higher is
    better; in-mask PSNR against the truth). ``speed``: per variant, higher is faster. The
    most faithful variant has the highest mean fidelity. A variant is acceptable when the
    ``confidence`` interval of its paired difference to the most faithful one lies above
    ``-margin_db`` (not worse by the margin, and the data show it); the chosen one is the fastest
    acceptable variant, equally fast ones ranked by mean fidelity, then by name.
    """
    if not fidelity:
        raise EvaluationError("no variants to choose from")
    missing = set(fidelity) - set(speed)
    if missing:
        raise EvaluationError(f"no speed for variants {sorted(missing)}")
    means = {name: float(np.mean([v for v in values.values() if _finite(v)])) for name, values in fidelity.items()}
    best = max(sorted(means), key=lambda name: means[name])
    versus = {name: paired(values, fidelity[best], confidence) for name, values in fidelity.items()}
    acceptable = [name for name in fidelity if name == best or versus[name].ci_low > -margin_db]
    chosen = max(sorted(acceptable), key=lambda name: (speed[name], means[name]))
    return Choice(chosen, best, margin_db, versus, acceptable)


def speed_target(target: float, median: float, q25: float, q75: float) -> dict[str, Any]:
    """A speed target with its spread: met only when the IQR's lower end (q25 of the per-round
    ratios) clears it, so a median that clears it by luck of the rounds does not count."""
    return {"target": target, "median": median, "iqr": [q25, q75], "met": bool(q25 >= target)}


class EditPairs:
    """Per-edit in-mask PSNRs of compressed edits and their dense twins (same case and noise
    seed), summarized with spread: the per-edit PSNR to dense, and the per-edit truth gap."""

    def __init__(self) -> None:
        self.rows: dict[Any, dict[str, float]] = {}

    def add(self, key: Any, hilo: np.ndarray, dense: np.ndarray, truth: np.ndarray, region: np.ndarray) -> None:
        from .metrics import psnr

        self.rows[key] = {"hilo_vs_dense": psnr(hilo, dense, region), "hilo_vs_truth": psnr(hilo, truth, region),
                          "dense_vs_truth": psnr(dense, truth, region)}

    def column(self, name: str) -> dict[Any, float]:
        return {k: row[name] for k, row in self.rows.items()}

    def summary(self) -> dict[str, Any]:
        """``psnr_mask_hilo_vs_dense``: per-edit PSNR to dense (identical edits left out);
        ``truth_gap``: dense's PSNR to the truth minus HiLo's, paired per edit (dB)."""
        return {"edits": len(self.rows),
                "psnr_mask_hilo_vs_dense": summarize(v for v in self.column("hilo_vs_dense").values()
                                                     if math.isfinite(v)).to_dict(),
                "truth_gap": paired(self.column("dense_vs_truth"), self.column("hilo_vs_truth")).to_dict()}


# ------------------------------------------------------------------ the selection study's table


def per_pair(records: Iterable[Mapping[str, Any]], metric: str) -> dict[str, dict[tuple, float]]:
    """Per variant, per (case, noise seed): ``metric`` averaged over the variant's draws."""
    sums: dict[str, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("noise_seed") is None or r.get(metric) is None:
            continue
        sums[r["variant"]][(r["case"], r["noise_seed"])].append(float(r[metric]))
    return {v: {k: float(np.mean(x)) for k, x in pairs.items()} for v, pairs in sums.items()}


def ideal_speedup(records: Iterable[Mapping[str, Any]], variants: Iterable[str], flops, n_grid: int) -> dict[str, float]:
    """Per variant: the dense step's FLOPs over the mean FLOPs of its plans (each at its own length)."""
    costs: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r.get("noise_seed") is not None and r["variant"] in set(variants):
            costs[r["variant"]].append(flops(r["tokens"]))
    return {v: flops(n_grid) / float(np.mean(c)) for v, c in costs.items()}


def selection_table(records: list[Mapping[str, Any]], variants: list[Any], margin_db: float = 0.2,
                    baseline: str = "padded/sobel") -> dict[str, Any]:
    """The study's paired table and the rule's choice: every variant against the truth, against
    dense, and its paired differences to ``baseline`` and to the most faithful variant."""
    from .flops import FLUX1_DEV, StepFlops

    labels = [v.label for v in variants]
    all_truth = per_pair(records, "psnr_mask_vs_truth")
    truth = {k: v for k, v in all_truth.items() if k in labels}
    dense = per_pair(records, "psnr_mask_vs_dense")
    dense_truth = all_truth.get("dense", {})
    # complete pairs only: every variant (and dense) has the same cases, so differences pair up
    keys = set(dense_truth)
    for label in labels:
        keys &= set(truth.get(label, {}))
    truth = {label: {k: truth[label][k] for k in keys} for label in labels if label in truth}
    # the 64x64 grid of 512-px reference edits is Flux's at 1024 px: lengths priced with Flux.1-dev's FLOPs
    grid = max((r["tokens"] for r in records if r["variant"] == "dense"), default=4096)
    flops = StepFlops.count(FLUX1_DEV, 512)
    speed = ideal_speedup([r for r in records if (r["case"], r.get("noise_seed")) in keys], labels, flops, grid)
    # defaults must run in every pipeline: without low-frequency tokens a plan that drops tokens
    # has nothing to fill them from (the generic pipelines' fill="lowfreq"), so those variants are
    # measured and reported but not candidates
    eligible = [v.label for v in variants if getattr(v, "lowfreq", True) and v.label in truth]
    choice = choose_variant({k: truth[k] for k in eligible}, speed, margin_db) if keys and eligible else None
    rows = {}
    for label in labels:
        if label not in truth:
            continue
        rows[label] = {
            "ideal_speedup": round(speed[label], 3),
            "psnr_mask_vs_truth_mean": round(float(np.mean(list(truth[label].values()))), 3),
            "vs_baseline_truth": paired(truth[label], truth[baseline]).to_dict() if baseline in truth else None,
            "vs_dense_minus_baseline": paired({k: dense[label][k] for k in keys if k in dense.get(label, {})},
                                              dense.get(baseline, {})).to_dict() if baseline in dense else None,
            "vs_dense": summarize(dense[label][k] for k in keys if _finite(dense.get(label, {}).get(k))).to_dict(),
            "truth_minus_dense_truth": paired(truth[label], dense_truth).to_dict(),
            "vs_most_faithful_truth": paired(truth[label], truth[choice.most_faithful]).to_dict() if choice else None,
        }
        twin = label.removesuffix("/no-lowfreq")
        if twin != label and twin in truth:  # what the low-frequency tokens buy, paired
            rows[label]["minus_with_lowfreq"] = {
                "truth": paired(truth[label], truth[twin]).to_dict(),
                "dense": paired({k: dense[label][k] for k in keys}, {k: dense[twin][k] for k in keys}).to_dict()}
    cases = sorted({k[0] for k in keys})
    return {"n_pairs": len(keys), "cases": len(cases), "noise_seeds": sorted({k[1] for k in keys}),
            "edits_full": sorted({r["case"] for r in records if r["variant"] == "full"}),
            "baseline": baseline, "margin_db": margin_db, "candidates": eligible, "rows": rows,
            "rule": choice.to_dict() if choice else None}


def selection_markdown(table: Mapping[str, Any]) -> str:
    """The paired table as markdown: differences are mean ± sd (n, 95% CI), in dB."""
    def cell(d: Mapping[str, Any] | None) -> str:
        if not d or not d.get("n"):
            return "-"
        return f"{d['mean']:+.2f} ± {d['sd']:.2f} ({d['ci_low']:+.2f}..{d['ci_high']:+.2f})"

    rule = table.get("rule") or {}
    lines = [f"{table['n_pairs']} pairs ({table['cases']} cases x noise seeds {table['noise_seeds']}); "
             f"differences: mean ± sd (95% CI), dB, paired by case and noise seed.", "",
             f"| variant | ideal speedup | in-mask PSNR vs truth | minus {table['baseline']} (vs truth) "
             f"| minus the most faithful (vs truth) | vs dense | vs dense, minus {table['baseline']} |",
             "|---|---|---|---|---|---|---|"]
    for label, row in table["rows"].items():
        mark = " **(chosen)**" if label == rule.get("chosen") else ""
        lines.append(f"| {label}{mark} | {row['ideal_speedup']:.2f}x | {row['psnr_mask_vs_truth_mean']:.2f} dB "
                     f"| {cell(row['vs_baseline_truth'])} | {cell(row.get('vs_most_faithful_truth'))} "
                     f"| {row['vs_dense']['mean']:.2f} ± {row['vs_dense']['sd']:.2f} dB | {cell(row['vs_dense_minus_baseline'])} |")
    if rule:
        lines += ["", f"Candidates (with low-frequency tokens): {', '.join(table['candidates'])}. Most faithful: "
                      f"{rule['most_faithful']}. Not worse by {rule['margin_db']} dB (CI above -{rule['margin_db']}): "
                      f"{', '.join(rule['acceptable'])}. Chosen (fastest of those): **{rule['chosen']}**."]
    for label, row in table["rows"].items():
        if "minus_with_lowfreq" in row:
            effect = row["minus_with_lowfreq"]
            lines += ["", f"Without the low-frequency tokens ({label} minus its twin with them): vs truth "
                          f"{cell(effect['truth'])}, vs dense {cell(effect['dense'])} dB."]
    return "\n".join(lines) + "\n"

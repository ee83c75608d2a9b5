"""What a distillation leaves beside its model: ``distill.json`` (settings, loss curve, wall time) and ``loss.png``."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import require
from ..files import atomic_path
from .student import TrainError

REPORT = "distill.json"
PLOT = "loss.png"


def write_report(out: Path, settings: dict[str, Any], source: Any, history: list[dict[str, Any]], seconds: float,
                 sigmas: list[float], rank: int) -> None:
    hilo = [r["loss"] for r in history if r["kind"] == "hilo"]
    full = [r["loss"] for r in history if r["kind"] == "full"]
    validation = [(r["step"], r["loss"]) for r in history if r["kind"] == "validation"]
    report = {
        "model": {"name": source.name, "kind": source.kind, "token_size": source.token_size},
        "settings": settings,
        "student": {"lora_rank": rank, "lowfreq_embedding": "learned, started at the model's own patch embedding"},
        "sigmas": [round(s, 6) for s in sigmas],
        "steps": max((r["step"] for r in history), default=0),
        "wall_seconds": round(seconds, 1),
        "machine": {"device": settings["device"], "torch_threads": torch.get_num_threads(), "cpu": platform.processor()},
        "loss": {"hilo_first": _mean(hilo[:20]), "hilo_last": _mean(hilo[-20:]),
                 "full_first": _mean(full[:10]), "full_last": _mean(full[-10:]),
                 "validation": [[step, round(loss, 8)] for step, loss in validation]},
        "history": history,
    }
    with atomic_path(out / REPORT) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    plot_loss(history, out / PLOT)


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 6) if values else None


def plot_loss(history: list[dict[str, Any]], path: Path) -> None:
    """Loss per step (dots) and its running mean, HiLo steps and dense steps apart, on a log scale."""
    matplotlib = require("matplotlib", TrainError, "the loss plot needs matplotlib: pip install matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    validation = [(r["step"], r["loss"]) for r in history if r["kind"] == "validation"]
    if validation:
        ax.plot(*zip(*validation), "o-", color="black", label="HiLo, fixed validation batches")
    for kind, colour in (("hilo", "tab:blue"), ("full", "tab:orange")):
        points = [(r["step"], r["loss"]) for r in history if r["kind"] == kind]
        if not points:
            continue
        steps, losses = map(np.asarray, zip(*points))
        ax.plot(steps, losses, ".", color=colour, alpha=0.25, markersize=3)
        window = max(1, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, "-", color=colour, label=f"{kind} (running mean of {window})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("student vs dense teacher (weighted MSE)")
    ax.grid(alpha=0.3)
    if history:
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)

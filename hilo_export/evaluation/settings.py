"""What a bench run measures (``BenchSettings``), its targets, and the evaluation photos.

Shared by the bench's parts (``latency``, ``fidelity``, ``bench``, ``pipeline_bench``), the
report and the sweep; imports no other evaluation module, so none of them import in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import HiLoError
from ..model.loading import BUILTIN_CONFIGS, REFERENCE, REFERENCE_MODELS
from ..planning.plan import PlannerConfig

EVAL_IMAGES = ("coffee", "chelsea", "rocket")
RING_PX = 8  # border ring width: one reference-model token
# the targets: per-step speedup per category, and fidelity
SPEEDUP_TARGETS = {"small": 4.0, "medium": 2.9, "large": 1.9}
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
    fidelity_model: str = REFERENCE  # the shipped reference model whose edits are scored (or reference-hilo)
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
    backend: str = "ort"  # the latency engines' (fidelity runs the reference model on ORT)
    latency: bool = True
    fidelity: bool = True
    latency_backends: tuple[str, ...] = ()  # timed beside the main backend in the same rounds, e.g. ("torch",)

    def __post_init__(self) -> None:
        for name in ("per_category", "fidelity_masks", "probe_per_family", "steps", "repeats", "length_groups"):
            if getattr(self, name) < 1:
                raise BenchError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.images or not self.seeds:
            raise BenchError("give at least one evaluation image and one seed")
        if self.fidelity_model not in REFERENCE_MODELS:
            raise BenchError(f"fidelity runs a shipped reference model ({', '.join(REFERENCE_MODELS)}), "
                             f"not {self.fidelity_model!r}")
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
    """uint8 [H, W, 3]: a bundled held-out photo resized (Lanczos) to ``size`` = (width, height)."""
    path = resources.files("hilo_export") / "data" / "eval" / f"{name}.png"
    with Image.open(str(path)) as image:
        return np.asarray(image.convert("RGB").resize(size, Image.LANCZOS))


def eval_image_path(name: str) -> Path:
    return Path(str(resources.files("hilo_export") / "data" / "eval" / f"{name}.png"))


def model_config(name: str) -> dict:
    """The transformer config of a built-in model the bench can time (FLOP counts)."""
    if name in REFERENCE_MODELS:
        from ..reference.model import CONFIG

        return CONFIG
    if name not in BUILTIN_CONFIGS:
        raise BenchError(f"latency model {name!r}: bench times a built-in ({', '.join((*BUILTIN_CONFIGS, *REFERENCE_MODELS))})")
    return BUILTIN_CONFIGS[name]

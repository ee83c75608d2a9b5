"""``hilo-export edit``: one inpainting edit with HiLo engines, optionally next to the dense model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import HiLoError
from ..export import BuildRequest, build, default_out_dir
from ..model.loading import REFERENCE, REFERENCE_MODELS
from ..planning.picture import selection_picture
from ..planning.plan import PlannerConfig
from ..reference.pipeline import EditResult, ReferenceInpaintPipeline, check_edit_inputs
from ..runtime.pipeline import apply
from ..runtime.runtime import HiLoRuntime
from .metrics import psnr

log = logging.getLogger(__name__)


class EditError(HiLoError, ValueError):
    """An edit that cannot be run as asked; the message says how to fix it."""


@dataclass
class EditOutcome:
    hilo: EditResult
    dense: EditResult | None
    engines: Path
    image: np.ndarray | None = None  # the input as edited, where it was resized to the engines' size
    mask: np.ndarray | None = None


def reference_engines(resolution: tuple[int, int], root: Path = Path("engines"),
                      progress: Callable[[str], None] = log.info, config: PlannerConfig | None = None,
                      model: str = REFERENCE) -> Path:
    """A shipped reference model's engines for one image size (and planner): built once, then reused from the cache."""
    return build(BuildRequest(model, resolution=resolution, out_dir=default_out_dir(model, resolution, root),
                              config=config or PlannerConfig()), progress=progress)


def run_edit(image: np.ndarray, mask: np.ndarray, engines: Path | None = None, steps: int = 8, seed: int = 0,
             compare: bool = False, progress: Callable[[str], None] = log.info, progress_bar: bool = True,
             model: str = REFERENCE) -> EditOutcome:
    """``model``: the shipped reference model whose engines are built when ``engines`` is None; given
    engines run with the reference model they were built from."""
    check_edit_inputs(image, mask)  # every argument before a build, not after it
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise EditError(f"steps must be a whole number of at least 1, got {steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise EditError(f"seed must be a whole number of at least 0, got {seed!r}")
    if engines is None:
        engines = reference_engines((image.shape[1], image.shape[0]), progress=progress, model=model)
    runtime = HiLoRuntime.load(engines)
    built_from = runtime.manifest["model"]["name"]
    if built_from not in REFERENCE_MODELS:
        raise EditError(
            f"{engines} holds engines of {runtime.manifest['model']['name']}; without --model, edit runs the reference "
            "model's engines (build them with: hilo-export build --model reference --resolution WxH). For a saved "
            "FluxFillPipeline pass --model FOLDER; for another pipeline use hilo_export.apply(pipe, runtime)."
        )
    pipe = ReferenceInpaintPipeline.from_reference(built_from)  # --compare's dense edit: the same weights
    pipe.set_progress_bar_config(disable=not progress_bar)
    with apply(pipe, runtime):
        hilo = pipe(image, mask, steps=steps, seed=seed)
        dense = pipe(image, mask, steps=steps, seed=seed, dense=True) if compare else None
    return EditOutcome(hilo, dense, engines)


def comparison_picture(image: np.ndarray, mask: np.ndarray, outcome: EditOutcome) -> Image.Image:
    """Input, mask, selection map (with its legend below), dense edit, HiLo edit and their difference (x4), in one row."""
    hilo, dense = outcome.hilo.image, outcome.dense.image
    difference = np.clip(np.abs(hilo.astype(np.int16) - dense.astype(np.int16)) * 4, 0, 255).astype(np.uint8)
    selection = selection_picture(Image.fromarray(image), outcome.hilo.plan)
    inside = mask > 0
    panels = [
        ("input", Image.fromarray(image)),
        ("mask", Image.fromarray(np.where(inside, 255, 0).astype(np.uint8)).convert("RGB")),
        (f"selection: bucket {outcome.hilo.plan.bucket}", selection),
        ("dense", Image.fromarray(dense)),
        ("HiLo", Image.fromarray(hilo)),
        (f"|HiLo - dense| x4, {psnr(hilo, dense, inside):.1f} dB", Image.fromarray(difference)),
    ]
    label = 22
    widths = [panel.width for _, panel in panels]  # the selection panel may be wider: its legend needs room
    canvas = Image.new("RGB", (sum(widths), max(panel.height for _, panel in panels) + label), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    x = 0
    for (title, panel), width in zip(panels, widths):
        canvas.paste(panel, (x, label))
        draw.text((x + 4, 3), title, fill=(0, 0, 0), font=font)
        x += width
    return canvas

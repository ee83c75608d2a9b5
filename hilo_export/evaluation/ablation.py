"""What each part of HiLo buys: the same edit with other token selections at the same budget.

Selections (``SELECTIONS``), each derived from the HiLo plan of the edit, so every one that
can fill a budget sends the DiT exactly HiLo's token count ``K``:

- ``hilo``: the planner's plan (dilated mask + low-frequency + highest-frequency context);
- ``random_context``: the same mask and low-frequency tokens, the context tokens drawn at
  random (seeded) from outside the dilated mask;
- ``no_lowfreq``: no low-frequency tokens; their slots go to the next context tokens in the
  plan's context policy's order (``planning.selection``);
- ``mask_only``: the dilated mask alone (fewer than ``K`` tokens: nothing else to send);
- ``core_only``: the dilated mask and the low-frequency tokens: every context token beyond the
  dilation ring removed (the context probe's "bad selection"; the ring of ``dilation`` tokens
  around the hole is still context, so this understates what context buys);
- ``hole_only``: the undilated mask tokens and the low-frequency tokens: every context token
  removed, the ring too;
- ``crop``: crop-and-stitch, the usual alternative to token dropping: the dense model on a
  token-aligned rectangle of about ``K`` tokens around the mask (its own pre-fill, as a crop
  would have), pasted back.

All run on torch (``SelectionTransformer``), no engines: a plan is any ``TokenPlan``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from ..model.transformer import HiLoTransformer
from ..planning.buckets import FULL
from ..planning.inputs import as_mask, token_mask
from ..planning.plan import MASK, PlannerConfig, TokenPlan, plan_tokens
from ..planning.selection import ranking
from ..reference import model as ref
from ..reference.pipeline import ReferenceInpaintPipeline
from .errors import EvaluationError

log = logging.getLogger(__name__)

SELECTIONS = ("hilo", "random_context", "no_lowfreq", "mask_only", "core_only", "hole_only", "crop")


def with_tokens(plan: TokenPlan, keep: torch.Tensor, lowfreq: bool) -> TokenPlan:
    """``plan`` sending the full-resolution tokens ``keep`` (flat indices), with or without its low-frequency tokens."""
    keep = torch.sort(keep).values
    w = plan.grid[1]
    positions = torch.stack([keep // w, keep % w], dim=1).float()
    layout = plan.lowfreq if lowfreq else None
    if layout is not None:
        positions = torch.cat([layout.centres(), positions])
    return dataclasses.replace(plan, keep_indices=keep, positions=positions, lowfreq=layout)


def selection_plan(name: str, plan: TokenPlan, seed: int = 0, hole: torch.Tensor | None = None) -> TokenPlan:
    """The ablation ``name`` of a compressed HiLo ``plan`` (not for ``crop``: see ``crop_box``).
    ``hole_only`` needs ``hole``: the undilated mask tokens (bool [h, w])."""
    mask = (plan.kinds.reshape(-1) == MASK)
    mask_idx = torch.nonzero(mask).flatten()
    outside = torch.nonzero(~mask).flatten()
    n_context = plan.length - plan.n_lowfreq - len(mask_idx)
    if name == "hilo":
        return plan
    if name == "core_only":
        return with_tokens(plan, mask_idx, lowfreq=True)
    if name == "mask_only":
        return with_tokens(plan, mask_idx, lowfreq=False)
    if name == "random_context":
        pick = torch.randperm(len(outside), generator=torch.Generator().manual_seed(seed))[:n_context]
        return with_tokens(plan, torch.cat([mask_idx, outside[pick]]), lowfreq=True)
    if name == "hole_only":
        if hole is None:
            raise EvaluationError("hole_only needs the undilated mask tokens (hole=)")
        return with_tokens(plan, torch.nonzero(hole.reshape(-1)).flatten(), lowfreq=True)
    if name == "no_lowfreq":  # the policy's order: mask tokens first, then context
        order = ranking(plan.config, plan.kinds == MASK, plan.scores)
        return with_tokens(plan, order[:len(mask_idx) + n_context + plan.n_lowfreq], lowfreq=False)
    raise EvaluationError(f"unknown selection {name!r}; choose from {list(SELECTIONS)}")


def crop_box(plan: TokenPlan) -> tuple[int, int, int, int]:
    """Token rows/cols [r0, r1) x [c0, c1): the dilated mask's bounding box grown evenly to about ``plan.length`` tokens."""
    rows, cols = torch.nonzero(plan.kinds == MASK, as_tuple=True)
    h, w = plan.grid
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    while (r1 - r0) * (c1 - c0) < plan.length and (r1 - r0 < h or c1 - c0 < w):
        grown = False
        for side in range(4):  # one token on each side in turn, as long as the budget allows
            if (r1 - r0) * (c1 - c0) >= plan.length:
                break
            if side == 0 and r0 > 0:
                r0, grown = r0 - 1, True
            elif side == 1 and r1 < h:
                r1, grown = r1 + 1, True
            elif side == 2 and c0 > 0:
                c0, grown = c0 - 1, True
            elif side == 3 and c1 < w:
                c1, grown = c1 + 1, True
        if not grown:
            break
    return r0, r1, c0, c1


class SelectionTransformer(torch.nn.Module):
    """The stock transformer on whatever tokens ``select(image, mask)`` plans (None: dense).

    Dropped tokens get a zero prediction, as the reference pipeline's HiLo engines do (its
    dropped tokens hold only known pixels, which every step overwrites).
    """

    def __init__(self, model: torch.nn.Module, select: Callable[[np.ndarray, np.ndarray], TokenPlan | None]):
        super().__init__()
        self.model = model
        self.hilo = HiLoTransformer(model)
        self.config = model.config
        self.select = select
        self.plan: TokenPlan | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def prepare(self, image: np.ndarray, mask: np.ndarray, dense: bool = False) -> TokenPlan | None:
        self.plan = None if dense else self.select(image, np.asarray(mask) > 0)
        return self.plan

    def forward(self, hidden_states: torch.Tensor, return_dict: bool = True, **kwargs: Any):
        if self.plan is None or self.plan.bucket == FULL:
            return self.model(hidden_states=hidden_states, return_dict=return_dict, **kwargs)
        fill = torch.zeros(*hidden_states.shape[:2], self.config.out_channels)
        return self.hilo(hidden_states=hidden_states, plan=self.plan, fill=fill, return_dict=return_dict, **kwargs)


class Ablation:
    """Edits one image + mask with every selection, the same seed and steps as the dense edit."""

    def __init__(self, model: torch.nn.Module, decoder: ref.Decoder | None, buckets: str = "s,m,l",
                 config: PlannerConfig | None = None, steps: int = 8):
        self.model, self.decoder, self.steps = model, decoder, steps
        self.buckets, self.config = buckets, config or PlannerConfig()
        self.selection = "hilo"
        self.draw = 0  # the random_context selection's seed
        self.transformer = SelectionTransformer(model, self._select)
        self.pipe = ReferenceInpaintPipeline(self.transformer, FlowMatchEulerDiscreteScheduler(shift=1.0), decoder)
        self.pipe.set_progress_bar_config(disable=True)

    def plan(self, image: np.ndarray, mask: np.ndarray) -> TokenPlan:
        return plan_tokens(image, mask, ref.TOKEN_SIZE, self.buckets, self.config)

    def _select(self, image: np.ndarray, mask: np.ndarray) -> TokenPlan:
        hole = None
        if self.selection == "hole_only":
            hole, _ = token_mask(as_mask(mask), ref.TOKEN_SIZE, dilation=0, **self.config.mask_pixels(ref.TOKEN_SIZE))
        return selection_plan(self.selection, self.plan(image, mask), seed=self.draw, hole=hole)

    def dense(self, image: np.ndarray, mask: np.ndarray, seed: int = 0) -> np.ndarray:
        return self.pipe(image, mask, steps=self.steps, seed=seed, dense=True).image

    def edit(self, selection: str, image: np.ndarray, mask: np.ndarray, seed: int = 0) -> "SelectionEdit":
        """One selection's edit (same seed and steps as ``dense``)."""
        if selection == "crop":
            return self._crop_edit(image, mask, seed)
        self.selection = selection
        result = self.pipe(image, mask, steps=self.steps, seed=seed)
        kept = torch.zeros(result.plan.n_tokens, dtype=torch.bool)
        kept[result.plan.keep_indices] = True
        return SelectionEdit(result.image, result.plan.length, kept.reshape(result.plan.grid).numpy())

    def _crop_edit(self, image, mask, seed):
        plan = self.plan(image, mask)
        r0, r1, c0, c1 = crop_box(plan)
        s = ref.TOKEN_SIZE
        window = (slice(r0 * s, r1 * s), slice(c0 * s, c1 * s))
        edited = image.copy()
        # the crop's noise is the full edit's, cropped: the comparison with dense changes the tokens, not the noise
        noise_window = (plan.grid, r0, c0)
        edited[window] = self.pipe(image[window], mask[window], steps=self.steps, seed=seed, dense=True,
                                   noise_window=noise_window).image
        kept = np.zeros(plan.grid, bool)
        kept[r0:r1, c0:c1] = True
        return SelectionEdit(edited, (r1 - r0) * (c1 - c0), kept)


@dataclasses.dataclass
class SelectionEdit:
    image: np.ndarray  # uint8 [H, W, 3]
    tokens: int  # sequence length the DiT saw (low-frequency tokens included)
    kept: np.ndarray  # bool [h, w]: full-resolution tokens the DiT saw


def run_photo_ablation(ablation: Ablation, resolution: int, per_category: int = 1, images: tuple[str, ...] = ("coffee", "chelsea", "rocket"),
                       selections: tuple[str, ...] = SELECTIONS, seeds: tuple[int, ...] = (0,), draws: int = 1,
                       suite_seeds: tuple[int, ...] = (1,), progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Every selection on the held-out photos with suite masks (suite seed 1 as bench; more with
    ``suite_seeds``), every noise seed, ``draws`` draws of the random context: in-mask PSNR pooled
    per selection, and per edit paired with HiLo's by case and noise seed (``paired``: mean, sd,
    n, 95% CI of the difference; random draws averaged per pair first)."""
    from .masks import mask_suite
    from .metrics import Pooled, psnr
    from .settings import eval_image
    from .stats import paired, summarize

    pooled, tokens, full_edits, edits = Pooled(), {name: [] for name in selections}, 0, 0
    per_edit: dict[str, dict[str, dict[tuple, list[float]]]] = {
        metric: {name: {} for name in selections} for metric in ("vs_truth", "vs_dense")}
    for name in images:
        truth = eval_image(name, (resolution, resolution))
        for suite_seed in suite_seeds:
            for item in mask_suite((resolution, resolution), per_category, seed=suite_seed):
                inside = item.mask > 0
                if ablation.plan(truth, inside).bucket == FULL:
                    full_edits += 1
                    continue
                for seed in seeds:
                    key = (name, suite_seed, item.name, seed)
                    dense = ablation.dense(truth, inside, seed)
                    pooled.add("dense_vs_truth", dense, truth, inside)
                    for selection in selections:
                        for draw in range(draws if selection == "random_context" else 1):
                            ablation.draw = draw
                            edit = ablation.edit(selection, truth, inside, seed)
                            tokens[selection].append(edit.tokens / (resolution // ref.TOKEN_SIZE) ** 2)
                            pooled.add(f"{selection}_vs_dense", edit.image, dense, inside)
                            pooled.add(f"{selection}_vs_truth", edit.image, truth, inside)
                            per_edit["vs_truth"][selection].setdefault(key, []).append(psnr(edit.image, truth, inside))
                            per_edit["vs_dense"][selection].setdefault(key, []).append(psnr(edit.image, dense, inside))
                        ablation.draw = 0
                    edits += 1
        progress(f"ablation: {name} done")
    means = {metric: {sel: {k: float(np.mean(v)) for k, v in by_key.items()} for sel, by_key in table.items()}
             for metric, table in per_edit.items()}
    hilo = {metric: means[metric].get("hilo", {}) for metric in means}
    return {"size": [resolution, resolution], "edits": edits, "edits_full": full_edits, "noise_seeds": list(seeds),
            "suite_seeds": list(suite_seeds), "draws": draws,
            "psnr_mask_dense_vs_truth": pooled.psnr("dense_vs_truth"),
            "selections": {name: {"psnr_mask_vs_dense": pooled.psnr(f"{name}_vs_dense"),
                                  "psnr_mask_vs_truth": pooled.psnr(f"{name}_vs_truth"),
                                  "token_ratio": float(np.mean(tokens[name])) if tokens[name] else None,
                                  "paired": {
                                      "vs_dense": summarize(v for v in means["vs_dense"][name].values() if np.isfinite(v)).to_dict(),
                                      "vs_truth_minus_hilo": paired(means["vs_truth"][name], hilo["vs_truth"]).to_dict(),
                                      "vs_dense_minus_hilo": paired(means["vs_dense"][name], hilo["vs_dense"]).to_dict(),
                                  }}
                           for name in selections}}

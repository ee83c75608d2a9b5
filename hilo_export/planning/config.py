"""Planner settings (``PlannerConfig``), token kinds and the low-frequency block layout.

Split from ``plan.py`` (which re-exports all of it): the settings are read by the planner, the
context policies (``selection.py``), the ONNX planner and the engine builder.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .inputs import PlanError, as_int

# Token kinds in TokenPlan.kinds.
DROPPED, MASK, HIGH_FREQ, FILL = 0, 1, 2, 3
# How a plan's sequence length is set within its bucket (module docstring, step 5).
EXACT, PADDED = "exact", "padded"
SIZINGS = (EXACT, PADDED)
# How the context tokens outside the dilated mask are ranked (selection.py); every policy fills
# the same budget, so a request's sequence length does not depend on it.
SOBEL, RING, RANDOM = "sobel", "ring", "random"
CONTEXTS = (SOBEL, RING, RANDOM)
CONTEXT_HELP = ("How context tokens outside the dilated mask are ranked: sobel (highest frequency score), ring "
                "(nearest the mask) or random (seeded); every policy sends the same number of tokens.")

@dataclass(frozen=True)
class PlannerConfig:
    """Planner settings (see the module docstring for what each step does).

    dilation:       mask dilation radius, in tokens
    lowfreq_factor: tokens per low-frequency block side; None: no low-frequency tokens
    freq_threshold: regional score (0-1) from which a token is high-frequency
    region_radius:  box-filter radius of the regionalization, in tokens
    max_high_freq:  at most this fraction of the grid counts as high-frequency; None: no cap
    freq_samples:   analysis samples per token side; None: every pixel
    sizing:         "exact" (each plan runs at its own length) or "padded" (at its bucket's capacity)
    open_radius:    radius of the pixel mask's opening, in tokens (a fraction: applied to pixels)
    grow_radius:    pixel-level growth of the mask before pooling, in tokens (a fraction)
    min_coverage:   share of a token's pixels the (grown) mask must cover; 0: any pixel
    context:        how context tokens are ranked: "sobel" (regional frequency score, the paper's),
                    "ring" (nearest the dilated mask first) or "random" (a seeded draw)
    context_seed:   the "random" policy's seed: a given config plans the same tokens every time

    The pixel radii are in tokens so that a setting means the same on every token size (the
    bench's fidelity model has 8-px tokens, Flux 16-px); they round to whole pixels.
    """

    dilation: int = 1
    lowfreq_factor: int | None = 16
    freq_threshold: float = 0.06
    region_radius: int = 1
    max_high_freq: float | None = None
    freq_samples: int | None = 8
    # sizing and context: the variant the defaults rule picks on the shipped reference model
    # (docs/selection.md; scripts/selection.py reproduces it)
    sizing: str = EXACT
    open_radius: float = 0.0
    grow_radius: float = 0.0
    min_coverage: float = 0.0
    context: str = RANDOM
    context_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("dilation", "lowfreq_factor", "region_radius", "freq_samples"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, as_int(value, name))
        if self.dilation < 0:
            raise PlanError(f"dilation must be >= 0 tokens, got {self.dilation}")
        if self.lowfreq_factor is not None and self.lowfreq_factor < 1:
            raise PlanError(f"lowfreq_factor must be >= 1 (or None for no low-frequency tokens), got {self.lowfreq_factor}")
        if self.region_radius < 0:
            raise PlanError(f"region_radius must be >= 0 tokens, got {self.region_radius}")
        if not 0.0 <= self.freq_threshold <= 1.0:
            raise PlanError(f"freq_threshold must lie in [0, 1] (scores are normalized), got {self.freq_threshold}")
        if self.max_high_freq is not None and not 0.0 <= self.max_high_freq <= 1.0:
            raise PlanError(f"max_high_freq must be a fraction of the grid in [0, 1] or None, got {self.max_high_freq}")
        if self.freq_samples is not None and self.freq_samples < 1:
            raise PlanError(f"freq_samples must be >= 1 (or None for every pixel), got {self.freq_samples}")
        if self.sizing not in SIZINGS:
            raise PlanError(f"sizing must be one of {', '.join(SIZINGS)} (exact: each plan at its own length; "
                            f"padded: at its bucket's capacity, for CUDA graphs), got {self.sizing!r}")
        if self.context not in CONTEXTS:
            raise PlanError(f"context must be one of {', '.join(CONTEXTS)} (sobel: highest frequency score; ring: nearest "
                            f"the mask; random: seeded draw), got {self.context!r}")
        object.__setattr__(self, "context_seed", as_int(self.context_seed, "context_seed"))
        if self.context_seed < 0:
            raise PlanError(f"context_seed must be >= 0, got {self.context_seed}")
        for name in ("open_radius", "grow_radius"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 8.0:
                raise PlanError(f"{name} must be a number of tokens in [0, 8] (e.g. 0.25: a quarter token), got {value!r}")
        if isinstance(self.min_coverage, bool) or not isinstance(self.min_coverage, (int, float)) \
                or not 0.0 <= self.min_coverage <= 1.0:
            raise PlanError(f"min_coverage must be a share of a token's pixels in [0, 1] (0: any pixel), got {self.min_coverage!r}")

    def mask_pixels(self, token_size: int) -> dict[str, int]:
        """The mask cleanup in pixels at ``token_size``: opening and growth radii, and the pixels a
        token needs in the mask (``inputs.token_mask``'s arguments)."""
        area = token_size * token_size
        return {
            "open_px": round(self.open_radius * token_size),
            "grow_px": round(self.grow_radius * token_size),
            # an integer count, compared exactly by the ONNX planner too
            "min_pixels": max(1, math.ceil(self.min_coverage * area - 1e-9)),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PlannerConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise PlanError(f"unknown planner settings {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        # a manifest written before context policies existed planned with the Sobel score
        return cls(**{"context": SOBEL, **data})


@dataclass(frozen=True)
class LowFreqLayout:
    """Blocks of ``factor x factor`` tokens, each summarized by one low-frequency token."""

    factor: int
    grid: tuple[int, int]

    @property
    def blocks(self) -> tuple[int, int]:
        h, w = self.grid
        return -(-h // self.factor), -(-w // self.factor)

    @property
    def count(self) -> int:
        bh, bw = self.blocks
        return bh * bw

    def block_of_token(self) -> torch.Tensor:
        """int64 [h * w]: the block (row-major) each token belongs to."""
        h, w = self.grid
        rows = torch.arange(h) // self.factor
        cols = torch.arange(w) // self.factor
        return (rows[:, None] * self.blocks[1] + cols[None, :]).reshape(-1)

    def centres(self) -> torch.Tensor:
        """float32 [count, 2]: (row, col) of each block's centre in token units."""
        h, w = self.grid

        def axis(n: int) -> torch.Tensor:
            start = torch.arange(0, n, self.factor)
            stop = torch.clamp(start + self.factor, max=n)
            return (start + stop - 1).float() / 2

        rows, cols = axis(h), axis(w)
        return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)

    def pooling_matrix(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[count, h * w]: row b averages the tokens of block b."""
        one_hot = F.one_hot(self.block_of_token(), self.count).T.to(dtype)
        return one_hot / one_hot.sum(dim=1, keepdim=True)

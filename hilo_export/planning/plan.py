"""The HiLo token planner: which tokens of an image a DiT must see for one edit.

Pure torch (no diffusers, ONNX or backend imports). For an image, an edit mask and a token
size, the planner

1. turns the pixel mask into mask tokens (``inputs.token_mask``): optionally opens it (erode,
   then dilate, by ``open_radius`` tokens' worth of pixels: specks thinner than that vanish) and
   grows it by ``grow_radius`` tokens' worth of pixels; pools it to the token grid (a token is
   in the mask once ``min_coverage`` of its pixels are; 0: any pixel); dilates it by
   ``dilation`` tokens (square neighbourhood). These tokens are always kept;
2. scores every token by image frequency: Sobel x/y (3x3, edge-replicated) on the BT.601
   grayscale image in [0, 1], box-averaged to ``freq_samples`` samples per token side;
   magnitude ``sqrt(gx^2 + gy^2)`` divided by ``4 * sqrt(2)``, the largest magnitude
   possible, so every sample lies in [0, 1] and a score means the same on every image (a
   flat image scores 0 everywhere); a token's score is the mean over its samples;
3. regionalizes the score with a box filter of radius ``region_radius`` tokens, so that a
   textured region scores high as a whole while isolated specks are damped; outside-mask
   tokens whose regional score reaches ``freq_threshold`` form the high-frequency region
   (at most ``max_high_freq`` of the grid when set, highest score first);
4. adds one low-frequency token per ``f x f`` block of tokens (``f = lowfreq_factor``, the
   image downsampling factor per side; edge blocks may be partial), positioned at the
   block centre;
5. picks the smallest bucket whose capacity holds the low-frequency and mask tokens, then
   adds outside-mask tokens by regional score (highest first; ties: lower index first):
   - ``sizing="exact"``: the high-frequency region, as far as the capacity allows, and no
     more: the sequence has the plan's own length, in (previous bucket's capacity,
     capacity] (at least one kept token, so no engine ever sees an empty sequence);
   - ``sizing="padded"``: up to the capacity, so every plan of a bucket has one static
     length (CUDA graphs need that); the tokens beyond the region count as ``fill``.

Region tokens a bucket had no room for are reported as ``high_freq_dropped``. High-frequency
tokens never move a plan to a larger bucket: the bucket depends on the mask alone, which the
ONNX planner and the C++ reader repeat with integer arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .buckets import Bucket, choose_bucket, parse_buckets, rooms
from .config import (  # noqa: F401  (re-exported: the planner's public names)
    CONTEXTS,
    DROPPED,
    EXACT,
    FILL,
    HIGH_FREQ,
    MASK,
    PADDED,
    RANDOM,
    RING,
    SIZINGS,
    SOBEL,
    LowFreqLayout,
    PlannerConfig,
)
from .frequency import frequency_map, regional_mean
from .inputs import (  # noqa: F401  (PlanError re-exported)
    DEFAULT_TOKEN_SIZE,
    PlanError,
    as_image,
    as_mask,
    positive_token_size,
    token_grid,
    token_mask,
)
from .selection import ranking, region_size


@dataclass(frozen=True, eq=False)
class TokenPlan:
    """Which tokens one request sends through the DiT, and in which order.

    ``capacity`` is the bucket's capacity at this grid, ``length`` the sequence the plan sends
    (equal in padded sizing; at most the capacity in exact sizing). The DiT sequence is ``[low-frequency tokens ; keep_indices tokens]``; ``positions`` gives
    (row, col) in token units for every one of them, in that order. ``kinds`` (uint8 [h, w])
    says what each token is (DROPPED, MASK, HIGH_FREQ, FILL) and ``scores`` (float32 [h, w])
    is the regional frequency score the selection ranked by.
    """

    bucket: str
    capacity: int
    grid: tuple[int, int]
    token_size: int
    keep_indices: torch.Tensor
    positions: torch.Tensor
    lowfreq: LowFreqLayout | None
    kinds: torch.Tensor
    scores: torch.Tensor
    counts: dict[str, int]
    mask_ratio: float
    high_freq_dropped: int
    config: PlannerConfig = field(repr=False)

    @property
    def n_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def n_lowfreq(self) -> int:
        return 0 if self.lowfreq is None else self.lowfreq.count

    @property
    def length(self) -> int:
        """Sequence length the DiT sees: low-frequency plus kept full-resolution tokens."""
        return self.n_lowfreq + int(self.keep_indices.numel())

    @property
    def kept_ratio(self) -> float:
        return self.length / self.n_tokens

    def same_selection(self, other: "TokenPlan") -> bool:
        """Whether two plans send the same tokens at the same positions (one DiT call may serve both)."""
        return (
            self.grid == other.grid
            and self.lowfreq == other.lowfreq
            and torch.equal(self.keep_indices, other.keep_indices)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "capacity": self.capacity,
            "length": self.length,
            "grid": list(self.grid),
            "token_size": self.token_size,
            "mask_ratio": self.mask_ratio,
            "kept_ratio": self.kept_ratio,
            "tokens": {"total": self.length, **self.counts},
            "high_freq_dropped": self.high_freq_dropped,
            "lowfreq": None
            if self.lowfreq is None
            else {"factor": self.lowfreq.factor, "blocks": list(self.lowfreq.blocks)},
            "config": self.config.to_dict(),
            "keep_indices": self.keep_indices.tolist(),
        }


@dataclass(frozen=True)
class _Analysis:
    """What the planner knows about one image + mask before a bucket is chosen."""

    mask_tokens: torch.Tensor  # bool [h, w], dilated
    score: torch.Tensor  # float32 [h, w], regional frequency score
    mask_ratio: float


def plan_tokens(
    image: Any,
    mask: Any,
    token_size: int = DEFAULT_TOKEN_SIZE,
    buckets: str | Sequence[str] | None = "s,m,l",
    config: PlannerConfig | None = None,
) -> TokenPlan:
    """Plan one request: ``image`` H x W x 3 (uint8, or float in [0, 1]), ``mask`` H x W."""
    return plan_batch([image], [mask], token_size, buckets, config)[0]


def plan_batch(
    images: Sequence[Any],
    masks: Sequence[Any],
    token_size: int = DEFAULT_TOKEN_SIZE,
    buckets: str | Sequence[str] | None = "s,m,l",
    config: PlannerConfig | None = None,
) -> list[TokenPlan]:
    """Plan several requests into one bucket (the largest any of them needs).

    Accepts sequences of images and masks, or one batched array each (B x H x W x 3, B x H x W).
    """
    config = config or PlannerConfig()
    table = parse_buckets(buckets)
    token_size = positive_token_size(token_size)
    if len(images) != len(masks):
        raise PlanError(f"got {len(images)} images but {len(masks)} masks; pass one mask per image")
    if len(images) == 0:
        raise PlanError("nothing to plan: pass at least one image and mask")
    analyses = [_analyze(image, mask, token_size, config) for image, mask in zip(images, masks)]
    grids = {tuple(a.mask_tokens.shape) for a in analyses}
    if len(grids) != 1:
        raise PlanError(f"images of one batch must share a size; got token grids {sorted(grids)}")
    (grid,) = grids
    layout = _lowfreq_layout(grid, config)
    n_lowfreq = layout.count if layout else 0
    n_tokens = grid[0] * grid[1]
    needed = max(int(a.mask_tokens.sum()) for a in analyses)
    room = rooms(table, n_tokens, n_lowfreq)
    index = choose_bucket(room, needed)
    bucket = table[index]
    if bucket.is_full:
        n_kept = n_tokens
    else:
        room = room[index]
        # one batch runs at one length: the longest plan's (shorter ones take their next-best tokens)
        n_kept = room if config.sizing == PADDED else max(_exact_kept(a, room, config) for a in analyses)
    return [_select(a, bucket, n_kept, layout, token_size, config) for a in analyses]


def mask_from_file(pixels: Any) -> np.ndarray:
    """A grayscale mask image as the planner reads it: 0/255 as usual, but files saved as 0/1
    (common, and not fixable from a command line) as binary."""
    pixels = np.asarray(pixels)
    return pixels.astype(bool) if pixels.size and pixels.max() == 1 else pixels


def mandatory_tokens(mask: Any, token_size: int = DEFAULT_TOKEN_SIZE,
                     config: PlannerConfig | None = None) -> tuple[int, int, int]:
    """What a mask forces a plan to hold: (dilated-mask + low-frequency tokens, grid tokens, low-frequency tokens)."""
    config = config or PlannerConfig()
    token_size = positive_token_size(token_size)
    mask_t = as_mask(mask)
    grid = token_grid(*mask_t.shape, token_size)
    mask_tokens, _ = token_mask(mask_t, token_size, dilation=config.dilation, **config.mask_pixels(token_size))
    layout = _lowfreq_layout(grid, config)
    n_lowfreq = layout.count if layout else 0
    return int(mask_tokens.sum()) + n_lowfreq, grid[0] * grid[1], n_lowfreq


def _exact_kept(analysis: _Analysis, room: int, config: PlannerConfig) -> int:
    """Kept full-resolution tokens of an exact plan: mask plus (capped) high-frequency region,
    at least one, at most the bucket's ``room``. The same for every context policy."""
    n_mask = int(analysis.mask_tokens.sum())
    _, region = region_size(config, analysis.mask_tokens, analysis.score)
    return min(room, max(1, n_mask + region))


def _lowfreq_layout(grid: tuple[int, int], config: PlannerConfig) -> LowFreqLayout | None:
    return None if config.lowfreq_factor is None else LowFreqLayout(config.lowfreq_factor, grid)


def _select(
    analysis: _Analysis,
    bucket: Bucket,
    n_kept: int,
    layout: LowFreqLayout | None,
    token_size: int,
    config: PlannerConfig,
) -> TokenPlan:
    h, w = analysis.mask_tokens.shape
    n_tokens = h * w
    mask_flat = analysis.mask_tokens.reshape(-1)
    n_mask = int(mask_flat.sum())
    region, capped = region_size(config, analysis.mask_tokens, analysis.score)
    # Mask tokens rank first, then the policy's order (a stable sort: ties by lower index, so
    # plans are deterministic).
    order = ranking(config, analysis.mask_tokens, analysis.score)

    if bucket.is_full:
        layout = None
        keep = torch.arange(n_tokens)
        capacity = n_tokens
        n_context = min(capped, n_tokens - n_mask)
    else:
        capacity = bucket.capacity(n_tokens, layout.count if layout else 0)
        keep = torch.sort(order[:n_kept]).values
        # the high-frequency region's share of the budget: the first context tokens in the
        # policy's order (for sobel exactly the kept region tokens, capped by score)
        n_context = min(capped, n_kept - n_mask)

    kept = torch.zeros(n_tokens, dtype=torch.bool)
    kept[keep] = True
    kinds = torch.full((n_tokens,), DROPPED, dtype=torch.uint8)
    kinds[kept] = FILL
    kinds[order[n_mask:n_mask + n_context]] = HIGH_FREQ
    kinds[mask_flat] = MASK
    high_freq_dropped = max(0, region - (int(kept.sum()) - n_mask))

    positions = torch.stack([keep // w, keep % w], dim=1).float()
    if layout is not None:
        positions = torch.cat([layout.centres(), positions])
    counts = {
        "mask": int(mask_flat.sum()),
        "high_freq": int((kinds == HIGH_FREQ).sum()),
        "fill": int((kinds == FILL).sum()),
        "low_freq": layout.count if layout else 0,
    }
    return TokenPlan(
        bucket=bucket.name,
        capacity=capacity,
        grid=(h, w),
        token_size=token_size,
        keep_indices=keep,
        positions=positions,
        lowfreq=layout,
        kinds=kinds.reshape(h, w),
        scores=analysis.score,
        counts=counts,
        mask_ratio=analysis.mask_ratio,
        high_freq_dropped=high_freq_dropped,
        config=config,
    )


def _analyze(image: Any, mask: Any, token_size: int, config: PlannerConfig) -> _Analysis:
    image_t = as_image(image)
    mask_t = as_mask(mask)
    height, width = image_t.shape[:2]
    if tuple(mask_t.shape) != (height, width):
        raise PlanError(
            f"mask is {mask_t.shape[1]}x{mask_t.shape[0]} (WxH) but the image is {width}x{height}; "
            "resize the mask to the image size"
        )
    grid = token_grid(height, width, token_size)

    mask_tokens, mask_pixels = token_mask(mask_t, token_size, dilation=config.dilation, **config.mask_pixels(token_size))

    score = regional_mean(frequency_map(image_t, token_size, config.freq_samples), config.region_radius)
    assert mask_tokens.shape == score.shape == grid
    return _Analysis(mask_tokens, score, mask_pixels / mask_t.numel())

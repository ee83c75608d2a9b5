"""The HiLo token planner: which tokens of an image a DiT must see for one edit.

Pure torch (no diffusers, ONNX or backend imports). For an image, an edit mask and a token
size, the planner

1. pools the mask to the token grid (a token is in the mask if any of its pixels is) and
   dilates it by ``dilation`` tokens (square neighbourhood): these tokens are always kept;
2. scores every token by image frequency: Sobel x/y (3x3, edge-replicated) on the BT.601
   grayscale image in [0, 1], box-averaged to ``freq_samples`` samples per token side;
   magnitude ``sqrt(gx^2 + gy^2)`` divided by ``4 * sqrt(2)``, the largest magnitude
   possible, so every sample lies in [0, 1] and a score means the same on every image (a
   flat image scores 0 everywhere); a token's score is the mean over its samples;
3. regionalizes the score with a box filter of radius ``region_radius`` tokens, so that a
   textured region scores high as a whole while isolated specks are damped; tokens whose
   regional score reaches ``freq_threshold`` form the high-frequency region;
4. adds one low-frequency token per ``f x f`` block of tokens (``f = lowfreq_factor``, the
   image downsampling factor per side; edge blocks may be partial), positioned at the
   block centre;
5. picks the smallest bucket whose capacity holds the low-frequency and dilated-mask tokens,
   then fills the rest of the capacity with the outside-mask tokens of highest regional
   score (ties: lower index first), so the sequence length equals the capacity exactly.

Kept outside-mask tokens inside the high-frequency region count as ``high_freq`` (at most
``max_high_freq`` of the grid when set, highest score first); the other kept ones count as
``fill``: capacity the bucket gives beyond what the frequency map asked for. Region tokens
a bucket had no room for are reported as ``high_freq_dropped``.
"""

from __future__ import annotations

import math
import operator
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .buckets import Bucket, parse_buckets

# Token kinds in TokenPlan.kinds.
DROPPED, MASK, HIGH_FREQ, FILL = 0, 1, 2, 3

# BT.601 luma weights in thousandths: integer weights keep the gray sums of uint8 pixels exact.
GRAY_WEIGHTS = (299, 587, 114)
_SOBEL_MAX = 4.0 * math.sqrt(2.0)
_STRIP_BYTES = 1 << 20


class PlanError(ValueError):
    """An input the planner cannot plan; the message says how to fix it."""


@dataclass(frozen=True)
class PlannerConfig:
    """Planner settings (see the module docstring for what each step does).

    dilation:       mask dilation radius, in tokens
    lowfreq_factor: tokens per low-frequency block side; None: no low-frequency tokens
    freq_threshold: regional score (0-1) from which a token is high-frequency
    region_radius:  box-filter radius of the regionalization, in tokens
    max_high_freq:  at most this fraction of the grid counts as high-frequency; None: no cap
    freq_samples:   analysis samples per token side; None: every pixel
    """

    dilation: int = 1
    lowfreq_factor: int | None = 16
    freq_threshold: float = 0.06
    region_radius: int = 1
    max_high_freq: float | None = None
    freq_samples: int | None = 8

    def __post_init__(self) -> None:
        for name in ("dilation", "lowfreq_factor", "region_radius", "freq_samples"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _as_int(value, name))
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PlannerConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise PlanError(f"unknown planner settings {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


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


@dataclass(frozen=True, eq=False)
class TokenPlan:
    """Which tokens one request sends through the DiT, and in which order.

    The DiT sequence is ``[low-frequency tokens ; keep_indices tokens]``; ``positions`` gives
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
    def kept_ratio(self) -> float:
        return self.capacity / self.n_tokens

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
            "grid": list(self.grid),
            "token_size": self.token_size,
            "mask_ratio": self.mask_ratio,
            "kept_ratio": self.kept_ratio,
            "tokens": {"total": self.capacity, **self.counts},
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
    token_size: int = 16,
    buckets: str | Sequence[str] | None = "s,m,l",
    config: PlannerConfig | None = None,
) -> TokenPlan:
    """Plan one request: ``image`` H x W x 3 (uint8, or float in [0, 1]), ``mask`` H x W."""
    return plan_batch([image], [mask], token_size, buckets, config)[0]


def plan_batch(
    images: Sequence[Any],
    masks: Sequence[Any],
    token_size: int = 16,
    buckets: str | Sequence[str] | None = "s,m,l",
    config: PlannerConfig | None = None,
) -> list[TokenPlan]:
    """Plan several requests into one bucket (the largest any of them needs).

    Accepts sequences of images and masks, or one batched array each (B x H x W x 3, B x H x W).
    """
    config = config or PlannerConfig()
    table = parse_buckets(buckets)
    token_size = _positive_token_size(token_size)
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
    bucket = _choose_bucket(table, needed, n_tokens, n_lowfreq)
    return [_select(a, bucket, layout, token_size, config) for a in analyses]


def mask_from_file(pixels: Any) -> np.ndarray:
    """A grayscale mask image as the planner reads it: 0/255 as usual, but files saved as 0/1
    (common, and not fixable from a command line) as binary."""
    pixels = np.asarray(pixels)
    return pixels.astype(bool) if pixels.size and pixels.max() == 1 else pixels


def mandatory_tokens(mask: Any, token_size: int = 16, config: PlannerConfig | None = None) -> tuple[int, int, int]:
    """What a mask forces a plan to hold: (dilated-mask + low-frequency tokens, grid tokens, low-frequency tokens)."""
    config = config or PlannerConfig()
    token_size = _positive_token_size(token_size)
    mask_t = _as_mask(mask)
    grid = _token_grid(*mask_t.shape, token_size)
    mask_tokens = _dilate(_mask_tokens(mask_t, token_size)[0], config.dilation)
    layout = _lowfreq_layout(grid, config)
    n_lowfreq = layout.count if layout else 0
    return int(mask_tokens.sum()) + n_lowfreq, grid[0] * grid[1], n_lowfreq


def _choose_bucket(table: Sequence[Bucket], n_mask: int, n_tokens: int, n_lowfreq: int) -> Bucket:
    for bucket in table:
        if bucket.is_full or bucket.capacity(n_tokens, n_lowfreq) >= n_lowfreq + n_mask:
            return bucket
    raise AssertionError("bucket table has no full bucket")  # parse_buckets always appends it


def _lowfreq_layout(grid: tuple[int, int], config: PlannerConfig) -> LowFreqLayout | None:
    return None if config.lowfreq_factor is None else LowFreqLayout(config.lowfreq_factor, grid)


def _select(
    analysis: _Analysis,
    bucket: Bucket,
    layout: LowFreqLayout | None,
    token_size: int,
    config: PlannerConfig,
) -> TokenPlan:
    h, w = analysis.mask_tokens.shape
    n_tokens = h * w
    mask_flat = analysis.mask_tokens.reshape(-1)
    score_flat = analysis.score.reshape(-1)
    region = (score_flat >= config.freq_threshold) & ~mask_flat

    if bucket.is_full:
        layout = None
        keep = torch.arange(n_tokens)
        capacity = n_tokens
    else:
        capacity = bucket.capacity(n_tokens, layout.count if layout else 0)
        n_full_res = capacity - (layout.count if layout else 0)
        # Mask tokens rank above every score (scores are in [0, 1]); a stable descending
        # sort breaks ties by index, which keeps plans deterministic.
        key = torch.where(mask_flat, torch.tensor(2.0), score_flat)
        order = torch.sort(key, descending=True, stable=True).indices
        keep = torch.sort(order[:n_full_res]).values

    kept = torch.zeros(n_tokens, dtype=torch.bool)
    kept[keep] = True
    high_freq = _cap_high_freq(region & kept, score_flat, config.max_high_freq, n_tokens)
    kinds = torch.full((n_tokens,), DROPPED, dtype=torch.uint8)
    kinds[kept] = FILL
    kinds[high_freq] = HIGH_FREQ
    kinds[mask_flat] = MASK

    positions = torch.stack([keep // w, keep % w], dim=1).float()
    if layout is not None:
        positions = torch.cat([layout.centres(), positions])
    counts = {
        "mask": int(mask_flat.sum()),
        "high_freq": int(high_freq.sum()),
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
        high_freq_dropped=int((region & ~kept).sum()),
        config=config,
    )


def _cap_high_freq(candidates: torch.Tensor, score: torch.Tensor, cap: float | None, n_tokens: int) -> torch.Tensor:
    if cap is None:
        return candidates
    limit = int(cap * n_tokens)
    if int(candidates.sum()) <= limit:
        return candidates
    key = torch.where(candidates, score, torch.tensor(-1.0))
    top = torch.sort(key, descending=True, stable=True).indices[:limit]
    capped = torch.zeros_like(candidates)
    capped[top] = True
    return capped


# ---------------------------------------------------------------- analysis


def _analyze(image: Any, mask: Any, token_size: int, config: PlannerConfig) -> _Analysis:
    image_t = _as_image(image)
    mask_t = _as_mask(mask)
    height, width = image_t.shape[:2]
    if tuple(mask_t.shape) != (height, width):
        raise PlanError(
            f"mask is {mask_t.shape[1]}x{mask_t.shape[0]} (WxH) but the image is {width}x{height}; "
            "resize the mask to the image size"
        )
    grid = _token_grid(height, width, token_size)

    mask_tokens, mask_pixels = _mask_tokens(mask_t, token_size)
    mask_tokens = _dilate(mask_tokens, config.dilation)

    score = _regional_mean(_frequency_map(image_t, token_size, config.freq_samples), config.region_radius)
    assert mask_tokens.shape == score.shape == grid
    return _Analysis(mask_tokens, score, mask_pixels / mask_t.numel())


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise PlanError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise PlanError(f"{what} must be an integer, got {value!r}") from None


def _dilate(tokens: torch.Tensor, radius: int) -> torch.Tensor:
    if radius == 0:
        return tokens
    return F.max_pool2d(tokens[None, None].float(), 2 * radius + 1, 1, radius)[0, 0] > 0


def _positive_token_size(token_size: Any) -> int:
    token_size = _as_int(token_size, "token_size")
    if token_size < 1:
        raise PlanError(f"token_size must be a positive number of pixels, got {token_size}")
    return token_size


def _token_grid(height: int, width: int, token_size: int) -> tuple[int, int]:
    if height == 0 or width == 0:
        raise PlanError(f"image is {width}x{height}: it has no pixels")
    if height % token_size or width % token_size:
        def near(n: int) -> str:
            down = n // token_size * token_size
            return f"{down} or {down + token_size}" if down else f"{token_size}"

        raise PlanError(
            f"image is {width}x{height}, but both sides must be multiples of the token size {token_size}: "
            f"resize or crop to a width of {near(width)} and a height of {near(height)}"
        )
    return height // token_size, width // token_size


def _to_tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        array = np.ascontiguousarray(np.asarray(value))
    except (TypeError, ValueError) as err:
        raise PlanError(f"{what} must be a numpy array, torch tensor or PIL image; got {type(value).__name__}") from err
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise PlanError(f"{what} must hold numbers; got a {type(value).__name__} of dtype {array.dtype}")
    with warnings.catch_warnings():
        # read-only arrays (e.g. from PIL) are fine: the planner never writes to its inputs
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _as_image(image: Any) -> torch.Tensor:
    """uint8 or float [H, W, 3] as given (no copy for uint8); checked."""
    t = _to_tensor(image, "image")
    if t.ndim != 3 or t.shape[2] != 3:
        raise PlanError(f"image must be H x W x 3 (RGB, channels last); got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t
    if not t.is_floating_point():
        raise PlanError(f"image dtype {t.dtype} is not supported: pass uint8 (0-255) or float in [0, 1]")
    t = t.float()
    lo, hi = (float(v) for v in torch.aminmax(t))  # NaN propagates into both: one pass checks all
    if math.isnan(lo) or math.isnan(hi):
        raise PlanError("image contains NaN values; clean the image before planning")
    if lo < 0.0 or hi > 1.0:
        raise PlanError(f"float image values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]; for 0-255 data pass uint8 or divide by 255")
    return t


def _as_mask(mask: Any) -> torch.Tensor:
    """[H, W] bool, or uint8 read as 0/255 (binarized later at 128: cheaper than a bool copy)."""
    t = _to_tensor(mask, "mask")
    if t.ndim == 3 and t.shape[2] == 1:
        t = t[..., 0]
    if t.ndim != 2:
        raise PlanError(f"mask must be H x W (one channel); got shape {tuple(t.shape)}")
    if t.dtype in (torch.bool, torch.uint8):
        if t.dtype == torch.uint8 and int(t.max()) == 1:
            raise PlanError("uint8 mask holds only 0 and 1, but uint8 masks are read as 0/255; pass it as bool or multiply by 255")
        return t
    if t.is_floating_point():
        if torch.isnan(t).any():
            raise PlanError("mask contains NaN values; pass a mask of 0/1 floats, bool or uint8 0/255")
        return t >= 0.5
    raise PlanError(f"mask dtype {t.dtype} is not supported: pass bool, uint8 (0/255) or float (binarized at 0.5)")


def _mask_tokens(mask: torch.Tensor, token_size: int) -> tuple[torch.Tensor, int]:
    """bool [h, w]: tokens with any pixel in the mask; and the number of mask pixels."""
    height, width = mask.shape
    h, w = height // token_size, width // token_size
    peak = mask.reshape(h, token_size, width).amax(dim=1).view(h, w, token_size).amax(dim=2)
    if mask.dtype == torch.uint8:
        # a uint8 pixel is in the mask when its top bit is set (value >= 128)
        return peak >= 128, int(torch.count_nonzero(mask >> 7))
    return peak, int(torch.count_nonzero(mask))


# The score is computed with one fixed sequence of elementwise float32 operations (no fused
# multiply-adds such as addcmul, no reductions of unspecified order), so that the ONNX planner
# (planner_onnx.py), which repeats the sequence op for op, ranks tokens bit for bit the same.


def _frequency_map(image: torch.Tensor, token_size: int, samples: int | None) -> torch.Tensor:
    """float32 [h, w]: mean normalized Sobel magnitude over each token."""
    stride = _analysis_stride(token_size, samples)
    height, width, _ = image.shape
    h, w = height // token_size, width // token_size
    per_token = token_size // stride
    scores = torch.empty(h, w)
    # Strips of about 1 MiB of pixels keep temporaries small enough for the allocator to recycle:
    # whole-image temporaries cost more in page faults than in arithmetic.
    step = max(1, _STRIP_BYTES // (width * 3 * token_size))
    for first in range(0, h, step):
        last = min(h, first + step)
        # one analysis sample of context above and below; replicated at the image border
        top = max(0, first * token_size - stride)
        bottom = min(height, last * token_size + stride)
        gray = _box_gray(image[top:bottom], stride)
        pad_top, pad_bottom = int(first == 0), int(last == h)
        gray = F.pad(gray[None, None], (1, 1, pad_top, pad_bottom), mode="replicate")[0, 0]
        scores[first:last] = _pooled_sobel(gray, per_token)
    return scores / score_scale(token_size, samples, image.dtype == torch.uint8)


def score_scale(token_size: int, samples: int | None, uint8: bool) -> float:
    """What a token's summed Sobel magnitude is divided by to lie in [0, 1]: samples per token,
    the largest Sobel magnitude, and the gray scale of ``_box_gray`` (white = 1000 x stride^2,
    x 255 for uint8 pixels)."""
    stride = _analysis_stride(token_size, samples)
    per_token = token_size // stride
    white = sum(GRAY_WEIGHTS) * stride * stride * (255 if uint8 else 1)
    return per_token * per_token * _SOBEL_MAX * white


def _pooled_sobel(padded: torch.Tensor, per_token: int) -> torch.Tensor:
    """Sum of Sobel magnitudes over each per_token x per_token cell of a 1-padded gray strip."""
    # Sobel as separable differences and [1, 2, 1] smoothing: fewer passes than a 3x3 conv.
    # (a + c) + 2b rounds the same whether or not the add is fused: 2b is exact.
    dx = padded[:, 2:] - padded[:, :-2]
    gx = torch.add(dx[:-2], dx[2:]).add_(dx[1:-1], alpha=2)
    dy = padded[2:] - padded[:-2]
    gy = torch.add(dy[:, :-2], dy[:, 2:]).add_(dy[:, 1:-1], alpha=2)
    # gx^2 and gy^2 rounded separately, then added: addcmul_ would fuse them (one rounding
    # fewer) on CPUs with FMA, and ONNX has no such op
    squared = gx.mul_(gx).add_(gy.mul_(gy)).numpy()  # in place: torch.hypot is slower here
    # numpy's square root is the correctly rounded IEEE one (as ONNX Runtime's); torch's
    # vectorized one is not on every CPU (off by an ulp on AVX-512 machines)
    magnitude = torch.from_numpy(np.sqrt(squared, out=squared))
    rows, cols = magnitude.shape
    h, w = rows // per_token, cols // per_token
    # summed left to right in a fixed order (torch.sum's order depends on the vector width)
    return _sum_along(_sum_along(magnitude.view(h, per_token, cols), 1).view(h, w, per_token), 2)


def _regional_mean(score: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of each (2r+1)^2 token window that lies inside the grid (avg_pool2d with
    count_include_pad=False, summed window by window in row-major order)."""
    if radius == 0:
        return score
    h, w = score.shape
    size = 2 * radius + 1
    padded = F.pad(score, (radius, radius, radius, radius))  # zeros: adding 0 changes no sum
    total = padded[:h, :w].clone()
    for dy in range(size):
        for dx in range(size):
            if dy or dx:
                total.add_(padded[dy : dy + h, dx : dx + w])
    return total / window_counts((h, w), radius)


def window_counts(grid: tuple[int, int], radius: int) -> torch.Tensor:
    """float32 [h, w]: how many grid tokens the window of radius ``radius`` around each token covers."""

    def axis(n: int) -> torch.Tensor:
        i = torch.arange(n)
        return torch.clamp(i + radius, max=n - 1) - torch.clamp(i - radius, min=0) + 1

    return (axis(grid[0])[:, None] * axis(grid[1])[None, :]).float()


def _analysis_stride(token_size: int, samples: int | None) -> int:
    """Pixels per analysis sample along a side: token_size // samples when that divides evenly."""
    if samples is None or samples >= token_size or token_size % samples:
        return 1
    return token_size // samples


def _box_gray(image: torch.Tensor, stride: int) -> torch.Tensor:
    """float32 [H/stride, W/stride]: BT.601 gray summed over stride x stride blocks, in units
    where a white pixel is 1000 (x 255 for uint8): 299 R + 587 G + 114 B."""
    height, width, _ = image.shape
    # Summing uint8 in int16 (exact up to 11 x 11 blocks) is the cheapest pass over the
    # full-resolution pixels; everything after it runs on the smaller grid.
    uint8 = image.dtype == torch.uint8
    acc = (torch.int16 if stride <= 11 else torch.int32) if uint8 else torch.float32
    pixels = image.to(acc).reshape(height // stride, stride, width * 3)
    rows = _sum_along(pixels, 1)
    summed = _sum_along(rows.view(height // stride, width // stride, stride, 3), 2)
    red, green, blue = GRAY_WEIGHTS
    white = 255 * sum(GRAY_WEIGHTS) * stride * stride
    if uint8 and white >= 2**24:
        # integer weights: the gray sum is exact (int64 beyond what int32 holds), rounded
        # once when it becomes float32
        summed = summed.to(torch.int32 if white < 2**31 else torch.int64)
        return (summed[..., 0] * red + summed[..., 1] * green + summed[..., 2] * blue).float()
    # below 2^24 (blocks up to 8 x 8) every product and sum of uint8 sums is an integer that
    # float32 holds exactly, fused or not: the cheaper float path gives the exact gray sum
    gray = summed[..., 0] * float(red)
    return gray.add_(summed[..., 1], alpha=green).add_(summed[..., 2], alpha=blue)


def _sum_along(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum over a short axis with elementwise adds, left to right (much faster here than a
    strided reduction, and its rounding does not depend on the machine)."""
    parts = x.unbind(dim)
    if len(parts) == 1:
        return parts[0]
    total = parts[0] + parts[1]
    for part in parts[2:]:
        total += part
    return total

import numpy as np
import pytest
import torch
from conftest import TOKEN, textured_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hilo_export import LowFreqLayout, PlanError, PlannerConfig, plan_batch, plan_tokens
from hilo_export.planning import DROPPED, FILL, HIGH_FREQ, MASK, parse_buckets
from hilo_export.planning.selection import context_key

# ------------------------------------------------------------ independent references


def _square(pixels: np.ndarray, radius: int, grow: bool) -> np.ndarray:
    """Max (grow) or min (shrink) over each (2r+1)^2 square, by shifting a padded copy; outside the
    image never wins (max pooling ignores padding)."""
    if radius == 0:
        return pixels
    h, w = pixels.shape
    padded = np.pad(pixels, radius, constant_values=not grow)
    out = np.full_like(pixels, not grow)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            window = padded[dy : dy + h, dx : dx + w]
            out = out | window if grow else out & window
    return out


def reference_mask_tokens(mask: np.ndarray, token: int, config: PlannerConfig) -> np.ndarray:
    """Opened, grown, pooled by pixel count, dilated by a (2r+1)^2 square: written with plain loops."""
    px = config.mask_pixels(token)
    pixels = _square(_square(_square(mask, px["open_px"], False), px["open_px"], True), px["grow_px"], True)
    h, w = mask.shape[0] // token, mask.shape[1] // token
    pooled = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            pooled[i, j] = pixels[i * token : (i + 1) * token, j * token : (j + 1) * token].sum() >= px["min_pixels"]
    dilation = config.dilation
    dilated = np.zeros_like(pooled)
    for i in range(h):
        for j in range(w):
            dilated[i, j] = pooled[max(0, i - dilation) : i + dilation + 1, max(0, j - dilation) : j + dilation + 1].any()
    return dilated


def reference_block_centres(h: int, w: int, factor: int) -> list[tuple[float, float]]:
    centres = []
    for r0 in range(0, h, factor):
        for c0 in range(0, w, factor):
            rows = range(r0, min(r0 + factor, h))
            cols = range(c0, min(c0 + factor, w))
            centres.append([sum(rows) / len(rows), sum(cols) / len(cols)])
    return centres


def check_plan_invariants(plan, mask_bool: np.ndarray, config: PlannerConfig, buckets="s,m,l", minimal=True):
    h, w = plan.grid
    n = h * w
    keep = plan.keep_indices
    assert keep.dtype == torch.int64
    assert torch.equal(keep, torch.unique(keep)), "indices must be sorted and unique"
    assert len(keep) == 0 or (int(keep.min()) >= 0 and int(keep.max()) < n)
    must_keep = reference_mask_tokens(mask_bool, plan.token_size, config).reshape(-1)
    kept = np.zeros(n, bool)
    kept[keep.numpy()] = True
    assert kept[must_keep].all(), "every dilated-mask token is kept"
    assert plan.length == plan.n_lowfreq + len(keep)
    table = {b.name: b for b in parse_buckets(buckets)}
    assert plan.capacity == table[plan.bucket].capacity(n, plan.n_lowfreq)
    if config.sizing == "padded" or plan.bucket == "full":
        assert plan.length == plan.capacity
    elif minimal:  # exact: the mask and the (capped) high-frequency region, at least one token, within the capacity
        region = (plan.scores.reshape(-1).numpy() >= config.freq_threshold) & ~must_keep
        n_region = region.sum() if config.max_high_freq is None else min(region.sum(), int(config.max_high_freq * n))
        assert len(keep) == min(plan.capacity - plan.n_lowfreq, max(1, must_keep.sum() + n_region))
        assert plan.counts["fill"] == (1 if len(keep) == 1 and not must_keep.any() and not n_region else 0)
    else:  # exact, in a batch: the batch's longest plan's length
        assert plan.length <= plan.capacity
    c = plan.counts
    assert c["mask"] == must_keep.sum()
    assert c["mask"] + c["high_freq"] + c["fill"] == len(keep)
    assert c["low_freq"] == plan.n_lowfreq
    kinds = plan.kinds.reshape(-1).numpy()
    assert ((kinds != DROPPED) == kept).all()
    assert ((kinds == MASK) == must_keep).all()
    # the context policy's key (sobel: the regional score) ranks every kept outside token above every dropped one
    key = context_key(config, torch.from_numpy(must_keep.reshape(h, w)), plan.scores).reshape(-1).numpy()
    outside = key[~must_keep]
    kept_outside = kept[~must_keep]
    if kept_outside.any() and (~kept_outside).any():
        assert outside[kept_outside].min() >= outside[~kept_outside].max(), "the context takes the policy's highest keys"
    assert plan.positions.shape == (plan.length, 2)
    rows, cols = plan.positions[plan.n_lowfreq :].T
    assert torch.equal(rows.long() * w + cols.long(), keep)
    if plan.lowfreq is not None:
        expected = reference_block_centres(h, w, config.lowfreq_factor)
        assert plan.positions[: plan.n_lowfreq].tolist() == expected
    assert plan.mask_ratio == pytest.approx(mask_bool.mean())
    # the smallest bucket holding the mandatory tokens (a batch takes its largest member's)
    names = list(table)
    index = names.index(plan.bucket)
    if minimal and index > 0:
        smaller = table[names[index - 1]]
        lowfreq = 0 if config.lowfreq_factor is None else LowFreqLayout(config.lowfreq_factor, (h, w)).count
        assert smaller.capacity(n, lowfreq) < lowfreq + must_keep.sum()


# ------------------------------------------------------------ property tests


@st.composite
def requests(draw):
    h = draw(st.integers(1, 12))
    w = draw(st.integers(1, 12))
    token = draw(st.sampled_from([4, 8]))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h * token, w * token, 3), dtype=np.uint8)
    if draw(st.booleans()):
        image = image.astype(np.float32) / 255
    mask = np.zeros((h * token, w * token), bool)
    for _ in range(draw(st.integers(0, 4))):
        y0, y1 = sorted(draw(st.integers(0, h * token)) for _ in range(2))
        x0, x1 = sorted(draw(st.integers(0, w * token)) for _ in range(2))
        mask[y0:y1, x0:x1] = True
    if draw(st.booleans()):
        mask |= rng.random(mask.shape) < draw(st.sampled_from([0.0, 0.001, 0.02]))
    config = PlannerConfig(
        dilation=draw(st.integers(0, 2)),
        lowfreq_factor=draw(st.sampled_from([None, 1, 2, 3, 4, 16])),
        freq_threshold=draw(st.sampled_from([0.0, 0.04, 0.2, 1.0])),
        region_radius=draw(st.integers(0, 2)),
        max_high_freq=draw(st.sampled_from([None, 0.0, 0.1])),
        sizing=draw(st.sampled_from(["exact", "padded"])),
        open_radius=draw(st.sampled_from([0.0, 0.0, 0.25, 0.5])),
        grow_radius=draw(st.sampled_from([0.0, 0.0, 0.25, 1.0])),
        min_coverage=draw(st.sampled_from([0.0, 0.0, 0.1, 0.5])),
        context=draw(st.sampled_from(["sobel", "ring", "random"])),
        context_seed=draw(st.integers(0, 3)),
    )
    return image, mask, token, config


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_plan_invariants(request):
    image, mask, token, config = request
    plan = plan_tokens(image, mask, token_size=token, config=config)
    check_plan_invariants(plan, mask, config)
    again = plan_tokens(image, mask, token_size=token, config=config)
    assert torch.equal(again.keep_indices, plan.keep_indices) and again.counts == plan.counts


@settings(max_examples=40, deadline=None)
@given(st.lists(requests(), min_size=2, max_size=3))
def test_batched_plans_share_the_largest_bucket(batch):
    image, mask, token, config = batch[0]
    shape = image.shape[:2]
    images, masks = [image], [mask]
    for _, other_mask, *_ in batch[1:]:
        rng = np.random.default_rng(len(images))
        images.append(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
        m = np.zeros(shape, bool)
        m[: other_mask.shape[0], : other_mask.shape[1]] = other_mask[: shape[0], : shape[1]]
        masks.append(m)
    plans = plan_batch(images, masks, token_size=token, config=config)
    singles = [plan_tokens(i, m, token_size=token, config=config) for i, m in zip(images, masks)]
    order = [b.name for b in parse_buckets("s,m,l")]
    assert {p.bucket for p in plans} == {max((s.bucket for s in singles), key=order.index)}
    for plan, m in zip(plans, masks):
        check_plan_invariants(plan, m, config, minimal=False)


# ------------------------------------------------------------ defined results


def test_empty_mask_plans_the_smallest_bucket():
    plan = plan_tokens(textured_image(16, 16), np.zeros((128, 128), bool), token_size=TOKEN)
    assert plan.bucket == "s" and plan.counts["mask"] == 0 and plan.mask_ratio == 0.0


def test_full_mask_plans_full_with_every_token_and_no_lowfreq():
    plan = plan_tokens(textured_image(6, 10), np.ones((48, 80), bool), token_size=TOKEN)
    assert plan.bucket == "full" and plan.lowfreq is None
    assert torch.equal(plan.keep_indices, torch.arange(60))
    assert plan.capacity == 60 and plan.counts["mask"] == 60 and plan.counts["low_freq"] == 0


def test_fill_prefers_high_frequency_regions():
    image = textured_image(16, 16)  # noisy top-left quadrant, smooth elsewhere
    config = PlannerConfig(lowfreq_factor=None, context="sobel")
    plan = plan_tokens(image, np.zeros((128, 128), bool), token_size=TOKEN, buckets="s=0.25", config=config)
    kinds = plan.kinds.numpy()
    kept = (kinds == HIGH_FREQ) | (kinds == FILL)
    near_texture = np.zeros_like(kept)
    near_texture[:9, :9] = True  # the quadrant and the ring that regional smoothing reaches
    assert kept.sum() == 64 and not kept[~near_texture].any()
    assert kept[:8, :8].sum() >= 56
    assert not (kinds[8:, 8:] == HIGH_FREQ).any()


def test_flat_image_has_no_high_frequency_tokens():
    plan = plan_tokens(np.full((64, 64, 3), 90, np.uint8), np.zeros((64, 64), bool), token_size=TOKEN)
    assert plan.counts["high_freq"] == 0 and plan.counts["fill"] > 0


def test_mask_touching_borders_is_dilated_inside_the_grid():
    mask = np.zeros((64, 96), bool)
    mask[:3, :3] = True  # top-left corner
    mask[-1, -1] = True  # bottom-right pixel
    config = PlannerConfig(dilation=2, lowfreq_factor=4)
    plan = plan_tokens(textured_image(8, 12), mask, token_size=TOKEN, config=config)
    check_plan_invariants(plan, mask, config)
    assert plan.counts["mask"] == 9 + 9


def test_lowfreq_partial_blocks_and_single_block():
    assert LowFreqLayout(16, (25, 37)).blocks == (2, 3)
    assert LowFreqLayout(16, (4, 5)).count == 1
    assert LowFreqLayout(16, (4, 5)).centres().tolist() == [[1.5, 2.0]]
    pool = LowFreqLayout(4, (5, 6)).pooling_matrix()
    assert torch.allclose(pool.sum(dim=1), torch.ones(4))
    assert (pool > 0).sum(dim=1).tolist() == [16, 8, 4, 2]


def test_high_frequency_cap():
    image = textured_image(16, 16)
    config = PlannerConfig(max_high_freq=0.05)
    plan = plan_tokens(image, np.zeros((128, 128), bool), token_size=TOKEN, config=config)
    assert plan.counts["high_freq"] == int(0.05 * 256)
    assert plan.length == plan.counts["high_freq"] + plan.counts["fill"] + plan.n_lowfreq


def test_input_forms_agree():
    image = textured_image(8, 8)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 20:40] = 255
    reference = plan_tokens(image, mask, token_size=TOKEN)
    for img, m in [
        (torch.from_numpy(image), torch.from_numpy(mask)),
        (image, mask >= 128),
        (image, mask / 255.0),
        (image, (mask / 255.0 * 0.6).astype(np.float32)),  # soft mask: 0.6 >= 0.5
        (image, mask[..., None]),
    ]:
        plan = plan_tokens(img, m, token_size=TOKEN)
        assert torch.equal(plan.keep_indices, reference.keep_indices)
    soft = plan_tokens(image, (mask / 255.0 * 0.4).astype(np.float32), token_size=TOKEN)
    assert soft.counts["mask"] == 0  # 0.4 < 0.5: binarized away


def test_uint8_mask_is_read_at_half_scale():
    image = textured_image(4, 4)
    mask = np.zeros((32, 32), np.uint8)
    mask[0, 0], mask[31, 31] = 127, 128
    plan = plan_tokens(image, mask, token_size=TOKEN, config=PlannerConfig(dilation=0))
    assert plan.kinds.numpy()[3, 3] == MASK and plan.kinds.numpy()[0, 0] != MASK


# ------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "image, mask, message",
    [
        (np.zeros((60, 64, 3), np.uint8), np.zeros((60, 64), bool), "multiples of the token size 8.*height of 56 or 64"),
        (np.zeros((64, 64, 3), np.uint8), np.zeros((32, 64), bool), "resize the mask"),
        (np.full((64, 64, 3), np.nan, np.float32), np.zeros((64, 64), bool), "NaN"),
        (np.full((64, 64, 3), 2.0, np.float32), np.zeros((64, 64), bool), r"\[0, 1\]"),
        (np.zeros((64, 64, 3), np.int32), np.zeros((64, 64), bool), "pass uint8"),
        (np.zeros((64, 64), np.uint8), np.zeros((64, 64), bool), "H x W x 3"),
        (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.int64), "mask dtype"),
        (np.zeros((64, 64, 3), np.uint8), np.ones((64, 64), np.uint8), "only 0 and 1"),
        (np.zeros((64, 64, 3), np.uint8), np.full((64, 64), np.nan), "NaN"),
        (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), bool), "one channel"),
        ("not an image", np.zeros((64, 64), bool), "must hold numbers"),
        (np.zeros((0, 64, 3), np.uint8), np.zeros((0, 64), bool), "no pixels"),
    ],
)
def test_bad_inputs_get_clear_errors(image, mask, message):
    with pytest.raises(PlanError, match=message):
        plan_tokens(image, mask, token_size=TOKEN)


def test_bad_config_and_batch_errors():
    with pytest.raises(PlanError, match="dilation"):
        PlannerConfig(dilation=-1)
    with pytest.raises(PlanError, match="unknown planner settings"):
        PlannerConfig.from_dict({"dilaton": 1})
    with pytest.raises(PlanError, match="dilation must be an integer"):
        PlannerConfig(dilation=1.5)
    with pytest.raises(PlanError, match="lowfreq_factor must be an integer"):
        PlannerConfig(lowfreq_factor=True)
    assert PlannerConfig(lowfreq_factor=np.int64(4)).lowfreq_factor == 4
    image = textured_image(4, 4)
    with pytest.raises(PlanError, match="one mask per image"):
        plan_batch([image, image], [np.zeros((32, 32), bool)], token_size=TOKEN)
    with pytest.raises(PlanError, match="token_size must be an integer"):
        plan_tokens(image, np.zeros((32, 32), bool), token_size=8.0)
    assert plan_tokens(image, np.zeros((32, 32), bool), token_size=np.int64(8)).token_size == 8
    with pytest.raises(PlanError, match="share a size"):
        plan_batch([image, textured_image(4, 8)], [np.zeros((32, 32), bool), np.zeros((32, 64), bool)], token_size=TOKEN)


def test_plan_json_has_the_documented_fields():
    plan = plan_tokens(textured_image(8, 8), np.zeros((64, 64), bool), token_size=TOKEN)
    data = plan.to_json()
    assert {"bucket", "capacity", "grid", "mask_ratio", "tokens", "keep_indices"} <= set(data)
    assert set(data["tokens"]) == {"total", "mask", "high_freq", "fill", "low_freq"}
    assert data["keep_indices"] == plan.keep_indices.tolist()
    assert PlannerConfig.from_dict(data["config"]) == plan.config


# ------------------------------------------------------------ frequency score


def reference_frequency_map(image: np.ndarray, token: int, stride: int) -> np.ndarray:
    """Per-token mean Sobel magnitude of the box-averaged BT.601 gray image, normalized by 4*sqrt(2)."""
    rgb = image.astype(np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    height, width = gray.shape
    gray = gray.reshape(height // stride, stride, width // stride, stride).mean(axis=(1, 3))
    p = np.pad(gray, 1, mode="edge")
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    gx = sum(kx[i, j] * p[i : i + gray.shape[0], j : j + gray.shape[1]] for i in range(3) for j in range(3))
    gy = sum(kx.T[i, j] * p[i : i + gray.shape[0], j : j + gray.shape[1]] for i in range(3) for j in range(3))
    magnitude = np.hypot(gx, gy) / (4 * np.sqrt(2))
    cell = token // stride
    return magnitude.reshape(height // token, cell, width // token, cell).mean(axis=(1, 3))


@pytest.mark.parametrize("samples, stride", [(4, 2), (2, 4), (8, 1), (None, 1)])
@pytest.mark.parametrize("strip_bytes", [1, 1 << 20], ids=["one-token-row-strips", "one-strip"])
def test_frequency_map_matches_a_direct_sobel(monkeypatch, samples, stride, strip_bytes):
    from hilo_export.planning import frequency

    monkeypatch.setattr(frequency, "_STRIP_BYTES", strip_bytes)
    image = textured_image(5, 7, seed=3)  # 40 x 56 pixels: a 5 x 7 grid of 8-px tokens
    for img in (image, image.astype(np.float32) / 255):
        got = frequency.frequency_map(torch.from_numpy(img), 8, samples).numpy()
        assert np.allclose(got, reference_frequency_map(img, 8, stride), atol=1e-5)


# ------------------------------------------------------------ sizing and mask cleanup


def test_exact_plans_send_less_than_padded_ones_in_the_same_bucket():
    image = textured_image(16, 16)  # noisy top-left quadrant, smooth elsewhere
    mask = np.zeros((128, 128), bool)
    mask[100:110, 100:110] = True
    # a bucket with room to spare beyond the mask and the textured quadrant's region
    exact = plan_tokens(image, mask, token_size=TOKEN, buckets="s=0.6", config=PlannerConfig(sizing="exact"))
    padded = plan_tokens(image, mask, token_size=TOKEN, buckets="s=0.6", config=PlannerConfig(sizing="padded"))
    assert exact.bucket == padded.bucket and exact.capacity == padded.capacity
    assert exact.length < padded.length == padded.capacity
    assert exact.counts["fill"] == 0 and padded.counts["fill"] > 0
    # exact keeps a prefix of padded's ranking: every token it sends, padded sends too
    assert set(exact.keep_indices.tolist()) <= set(padded.keep_indices.tolist())


def test_an_empty_plan_still_sends_one_token():
    flat = np.full((64, 64, 3), 100, np.uint8)  # no high-frequency region, no mask: nothing asked for
    plan = plan_tokens(flat, np.zeros((64, 64), bool), token_size=TOKEN, config=PlannerConfig(lowfreq_factor=None, sizing="exact"))
    assert plan.length == 1 and len(plan.keep_indices) == 1


def test_opening_removes_specks_but_keeps_blobs():
    mask = np.zeros((128, 128), bool)
    mask[4:6, 4:6] = True  # a 2x2-pixel speck
    mask[64:96, 64:96] = True  # a 32-px square
    config = PlannerConfig(dilation=0, lowfreq_factor=None, open_radius=0.25)  # 2 px: specks below 5 px vanish
    tokens = reference_mask_tokens(mask, TOKEN, config)
    assert not tokens[0, 0] and tokens[8:12, 8:12].all() and tokens.sum() == 16
    plan = plan_tokens(textured_image(16, 16), mask, token_size=TOKEN, config=config)
    assert plan.counts["mask"] == 16
    assert plan.mask_ratio == pytest.approx(mask.mean())  # the ratio is the user's mask, before cleanup


def test_pixel_growth_reaches_only_the_near_neighbour():
    mask = np.zeros((64, 64), bool)
    mask[19:21, 22:24] = True  # 2x2 pixels in the middle of token (2, 2)'s right edge
    base = dict(dilation=0, lowfreq_factor=None)
    plain = plan_tokens(textured_image(8, 8), mask, token_size=TOKEN, config=PlannerConfig(**base))
    grown = plan_tokens(textured_image(8, 8), mask, token_size=TOKEN, config=PlannerConfig(**base, grow_radius=0.25))
    whole = plan_tokens(textured_image(8, 8), mask, token_size=TOKEN, config=PlannerConfig(dilation=1, lowfreq_factor=None))
    assert plain.counts["mask"] == 1
    # 2 px of growth crosses into the right neighbour only; a whole-token dilation takes all 8 neighbours
    assert set(np.flatnonzero(grown.kinds.numpy() == MASK)) == {2 * 8 + 2, 2 * 8 + 3}
    assert whole.counts["mask"] == 9


def test_coverage_drops_tokens_the_mask_barely_touches():
    mask = np.zeros((64, 64), bool)
    mask[16:24, 16:24] = True  # token (2, 2) whole
    mask[16:17, 24:25] = True  # one pixel of token (2, 3)
    config = PlannerConfig(dilation=0, lowfreq_factor=None, min_coverage=0.1)  # 7 of 64 pixels needed
    assert config.mask_pixels(TOKEN)["min_pixels"] == 7
    plan = plan_tokens(textured_image(8, 8), mask, token_size=TOKEN, config=config)
    assert set(np.flatnonzero(plan.kinds.numpy() == MASK)) == {2 * 8 + 2}


@pytest.mark.parametrize("field, value, message", [
    ("sizing", "fixed", "sizing must be one of exact, padded"),
    ("sizing", True, "sizing must be one of"),
    ("open_radius", -0.5, "open_radius must be a number of tokens"),
    ("grow_radius", "1", "grow_radius must be a number of tokens"),
    ("min_coverage", 1.5, "min_coverage must be a share"),
])
def test_bad_cleanup_and_sizing_settings_say_what_is_allowed(field, value, message):
    with pytest.raises(PlanError, match=message):
        PlannerConfig(**{field: value})

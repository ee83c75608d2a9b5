"""The ONNX planner (planning/onnx_planner.py) plans exactly what the Python planner plans."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hilo_export.folder import read_manifest
from hilo_export.planning import (
    PlanError,
    PlannerConfig,
    parse_buckets,
    plan_tokens,
    planner_model,
)

# (width, height), token size, buckets, planner settings: the defaults at a small size, and
# settings that exercise every branch (dilation 2, regional radius 2, coarser analysis samples,
# several low-frequency blocks, a one-bucket table; no dilation, no regionalization, every
# pixel analysed, no low-frequency tokens; one analysis sample per token).
CASES = {
    "defaults": ((96, 64), 16, "s,m,l", PlannerConfig()),
    "wide-windows": ((80, 48), 8, "s=0.2,m=0.5", PlannerConfig(dilation=2, region_radius=2, freq_samples=4, lowfreq_factor=2)),
    "bare": ((48, 40), 8, "s", PlannerConfig(dilation=0, region_radius=0, freq_samples=None, lowfreq_factor=None)),
    # one sample per 16-px token: gray sums beyond 2^24, the integer path rounded once
    "one-sample": ((96, 64), 16, "s,m,l", PlannerConfig(freq_samples=1, lowfreq_factor=3)),
    # each plan at its own length (the defaults pad every plan to its bucket's capacity)
    "exact": ((96, 64), 16, "s,m,l", PlannerConfig(sizing="exact")),
    # mask cleanup (opening, pixel growth, a coverage threshold) and a capped high-frequency region
    "cleanup": ((96, 64), 16, "s=0.3,m=0.6", PlannerConfig(sizing="exact", dilation=0, open_radius=0.125, grow_radius=0.25,
                                                           min_coverage=0.1, max_high_freq=0.05, freq_threshold=0.02)),
    "grow-only": ((80, 48), 8, "s,m,l", PlannerConfig(sizing="exact", dilation=0, grow_radius=0.5, lowfreq_factor=2)),
    # the other context policies: nearest the mask first (ties everywhere), a seeded draw
    "ring": ((96, 64), 16, "s,m,l", PlannerConfig(context="ring")),
    "ring-exact": ((80, 48), 8, "s=0.3,m=0.6", PlannerConfig(context="ring", sizing="exact", dilation=2, max_high_freq=0.05)),
    "random": ((96, 64), 16, "s,m,l", PlannerConfig(context="random", context_seed=7)),
    "random-exact": ((80, 48), 8, "s,m,l", PlannerConfig(context="random", sizing="exact", lowfreq_factor=None)),
}


@pytest.fixture(scope="module", params=list(CASES))
def planner(request):
    import onnxruntime as ort

    resolution, token, buckets, config = CASES[request.param]
    model = planner_model(resolution, token, buckets, config)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [b.name for b in parse_buckets(buckets)]

    def both(image, mask):
        bucket, keep, scores = session.run(None, {"image": image, "mask": mask})
        expected = plan_tokens(image, mask, token, buckets, config)
        # the scores too, bit for bit: an ulp apart would rank differently on some other image
        np.testing.assert_array_equal(scores, expected.scores.numpy())
        return (names[int(bucket[0])], keep), expected

    return resolution, both


@st.composite
def images(draw, width, height):
    kind = draw(st.sampled_from(["noise", "flat", "few-levels", "blocks", "gradient"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "noise":
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if kind == "flat":  # every score 0: the selection is all ties
        return np.full((height, width, 3), draw(st.integers(0, 255)), np.uint8)
    if kind == "few-levels":  # many equal scores
        return (rng.integers(0, 3, (height, width, 3)) * 127).astype(np.uint8)
    if kind == "blocks":  # textured and flat regions side by side
        image = np.full((height, width, 3), 90, np.uint8)
        y, x = rng.integers(0, height), rng.integers(0, width)
        image[y : y + height // 2, x : x + width // 2] = rng.integers(0, 256, image[y : y + height // 2, x : x + width // 2].shape)
        return image
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)


@st.composite
def masks(draw, width, height):
    kind = draw(st.sampled_from(["empty", "full", "rectangles", "noise", "soft-edge"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = np.zeros((height, width), np.uint8)
    if kind == "full":
        mask[:] = 255
    elif kind == "rectangles":
        for _ in range(draw(st.integers(1, 4))):
            y, x = rng.integers(0, height), rng.integers(0, width)
            mask[y : y + rng.integers(1, height), x : x + rng.integers(1, width)] = 255
    elif kind == "noise":  # values on both sides of the 128 threshold
        mask = rng.integers(0, 256, (height, width), dtype=np.uint8) * (rng.random((height, width)) < draw(st.floats(0, 0.2)))
        mask = mask.astype(np.uint8)
    elif kind == "soft-edge":  # 127 is not edited, 128 is
        y, x = rng.integers(0, height), rng.integers(0, width)
        mask[y:, x:] = 127
        mask[y + 1 :, x + 1 :] = 128
    if mask.max() == 1:  # uint8 0/1 masks are an error in both planners (checked below)
        mask[mask == 1] = 2
    return mask


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_onnx_planner_equals_python_planner(planner, data):
    (width, height), both = planner
    image = data.draw(images(width, height), label="image")
    mask = data.draw(masks(width, height), label="mask")
    (bucket, keep), expected = both(image, mask)
    assert bucket == expected.bucket
    assert keep.dtype == np.int64
    np.testing.assert_array_equal(keep, expected.keep_indices.numpy())


def test_the_edge_cases_by_name(planner):
    (width, height), both = planner
    noise = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    flat = np.full((height, width, 3), 200, np.uint8)
    empty, full = np.zeros((height, width), np.uint8), np.full((height, width), 255, np.uint8)
    for image in (noise, flat):
        for mask, bucket in ((empty, None), (full, "full")):
            (got, keep), expected = both(image, mask)
            assert got == expected.bucket and (bucket is None or got == bucket)
            np.testing.assert_array_equal(keep, expected.keep_indices.numpy())


def test_planner_rejects_a_resolution_off_the_token_grid():
    with pytest.raises(PlanError, match="multiples of the token size 16"):
        planner_model((100, 64), 16, "s", PlannerConfig())


def test_build_writes_the_planner_and_lists_it(built):
    import onnxruntime as ort
    from conftest import BUILD_RESOLUTION, textured_image

    from hilo_export.runtime import HiLoRuntime

    manifest = read_manifest(built)
    entry = manifest["planner_model"]
    assert [v["name"] for v in entry["inputs"]] == ["image", "mask"]
    assert [v["name"] for v in entry["outputs"]] == ["bucket", "keep_indices", "scores"]
    session = ort.InferenceSession(str(built / entry["files"][0]["path"]), providers=["CPUExecutionProvider"])
    runtime = HiLoRuntime.load(built)  # verifies the planner's sha256 too
    width, height = BUILD_RESOLUTION
    image = textured_image(height // 8, width // 8)
    mask = np.zeros((height, width), np.uint8)
    mask[: height // 3] = 255
    bucket, keep, scores = session.run(None, {"image": image, "mask": mask})
    plan = runtime.plan(image, mask)
    assert manifest["buckets"][int(bucket[0])]["name"] == plan.bucket
    np.testing.assert_array_equal(keep, plan.keep_indices.numpy())
    np.testing.assert_array_equal(scores, plan.scores.numpy())


def test_a_full_size_grid_with_many_ties():
    """4096 tokens (1024 x 1024, 16-px tokens): ONNX Runtime's TopK on a large input, where flat
    regions make thousands of equal scores, still ranks lower indices first."""
    import onnxruntime as ort

    size = 1024
    session = ort.InferenceSession(planner_model((size, size), 16, "s,m,l", PlannerConfig()).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    patch = np.full((size, size, 3), 128, np.uint8)  # flat but for a textured patch
    patch[600:900, 200:700] = rng.integers(0, 256, (300, 500, 3))
    levels = (rng.integers(0, 2, (size // 64, size // 64, 3)) * 255).astype(np.uint8).repeat(64, 0).repeat(64, 1)
    empty, square = np.zeros((size, size), np.uint8), np.zeros((size, size), np.uint8)
    square[300:700, 100:500] = 255
    cut_ties = 0
    for image in (patch, levels):
        for mask in (empty, square):
            bucket, keep, scores = session.run(None, {"image": image, "mask": mask})
            expected = plan_tokens(image, mask, 16, "s,m,l", PlannerConfig())
            assert ["s", "m", "l", "full"][int(bucket[0])] == expected.bucket
            np.testing.assert_array_equal(scores, expected.scores.numpy())
            np.testing.assert_array_equal(keep, expected.keep_indices.numpy())
            zero = expected.scores.numpy().reshape(-1) == 0
            kept_zero = np.isin(np.flatnonzero(zero), keep).sum()
            cut_ties += 0 < kept_zero < zero.sum()  # the capacity ended inside a run of equal scores
    assert cut_ties >= 2

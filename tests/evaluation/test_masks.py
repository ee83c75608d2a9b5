import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hilo_export.cli import main
from hilo_export.evaluation.errors import EvaluationError
from hilo_export.evaluation.masks import (
    CATEGORY_RATIOS,
    SHAPE_MIX,
    draw_mask,
    mask_suite,
    random_mask,
    sample_mask,
    shape_counts,
)


def test_shape_counts_follow_the_traffic_mix():
    counts = shape_counts(32)
    assert sum(counts.values()) == 32
    assert counts == {"scattered": 18, "elongated": 11, "square": 2, "irregular": 1}
    for n in (1, 5, 100):
        counts = shape_counts(n)
        assert sum(counts.values()) == n
        assert all(abs(counts[s] - SHAPE_MIX[s] * n) < 1 for s in counts)


@pytest.fixture(scope="module")
def suite():
    return mask_suite((256, 192), per_category=32, seed=0)


def test_suite_mean_ratios_match_the_paper_within_a_point(suite):
    for category, target in CATEGORY_RATIOS.items():
        masks = [m for m in suite if m.category == category]
        assert len(masks) == 32
        assert abs(np.mean([m.ratio for m in masks]) - target) <= 0.01, category
        assert {m.shape for m in masks} == set(SHAPE_MIX)


def test_suite_is_reproducible_and_seeded(suite):
    again = mask_suite((256, 192), per_category=32, seed=0)
    assert all(np.array_equal(a.mask, b.mask) and a.name == b.name for a, b in zip(suite, again))
    other = mask_suite((256, 192), per_category=32, seed=1)
    assert any(not np.array_equal(a.mask, b.mask) for a, b in zip(suite, other))
    assert suite[0].mask.shape == (192, 256) and suite[0].mask.dtype == np.uint8 and set(np.unique(suite[0].mask)) <= {0, 255}


def test_a_category_does_not_depend_on_the_others_asked_for(suite):
    large = mask_suite((256, 192), per_category=32, seed=0, categories=("large",))
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(large, [m for m in suite if m.category == "large"]))


def test_writing_a_smaller_suite_removes_the_masks_it_no_longer_has(tmp_path):
    from hilo_export.evaluation import write_suite

    write_suite(tmp_path, (64, 64), per_category=3)
    summary = write_suite(tmp_path, (64, 64), per_category=2)
    assert summary["small"][0] == 2 and len(list((tmp_path / "small").glob("*.png"))) == 2


def test_each_shape_lands_near_its_target():
    rng = np.random.default_rng(3)
    for shape in SHAPE_MIX:
        mask = draw_mask(shape, (128, 128), 0.2, rng)
        assert abs((mask > 0).mean() - 0.2) < 0.05, shape
    assert 0 < (random_mask((64, 64), rng) > 0).mean() < 0.7


def test_bad_requests_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(EvaluationError, match="unknown mask shape"):
        draw_mask("star", (64, 64), 0.1, rng)
    with pytest.raises(EvaluationError, match="target mask ratio"):
        draw_mask("square", (64, 64), 1.5, rng)
    with pytest.raises(EvaluationError, match="unknown mask categories"):
        mask_suite((64, 64), 2, categories=("tiny",))


def test_masks_command_writes_the_suite(tmp_path):
    result = CliRunner().invoke(main, ["masks", "--out", str(tmp_path), "--resolution", "96x64", "--per-category", "3"])
    assert result.exit_code == 0, result.output
    for category in CATEGORY_RATIOS:
        files = sorted((tmp_path / category).glob("*.png"))
        assert len(files) == 3
        assert Image.open(files[0]).size == (96, 64)
    bad = CliRunner().invoke(main, ["masks", "--out", str(tmp_path), "--resolution", "big"])
    assert bad.exit_code == 2 and "WIDTHxHEIGHT" in bad.output


def test_training_masks_follow_their_category():
    # distillation draws one mask at a time; each category's masks land around the suite's mean ratio
    rng = np.random.default_rng(0)
    for category, mean in CATEGORY_RATIOS.items():
        ratios = [float((sample_mask((96, 96), category, rng) > 0).mean()) for _ in range(12)]
        assert abs(np.mean(ratios) - mean) < 0.35 * mean, (category, np.mean(ratios))
    with pytest.raises(ValueError, match="unknown mask category"):
        sample_mask((64, 64), "huge", rng)

import numpy as np
import pytest

from hilo_export.planning import BucketError, PlannerConfig, calibrate, mandatory_tokens


def square(side_tokens: int, grid: int = 16, token: int = 8) -> np.ndarray:
    mask = np.zeros((grid * token, grid * token), bool)
    mask[: side_tokens * token, : side_tokens * token] = True
    return mask


def test_mandatory_tokens_counts_dilated_mask_and_lowfreq():
    config = PlannerConfig(dilation=1, lowfreq_factor=8)
    needed, n_tokens, n_lowfreq = mandatory_tokens(square(3), token_size=8, config=config)
    assert (needed, n_tokens, n_lowfreq) == (4 * 4 + 4, 256, 4)


def test_calibrate_splits_masks_by_the_requested_shares():
    config = PlannerConfig(dilation=0, lowfreq_factor=None)
    masks = [square(s) for s in range(1, 11)]  # needs 1, 4, 9, ... 100 tokens of 256
    result = calibrate(masks, token_size=8, shares=(0.5, 0.3, 0.2), config=config)
    fractions = {b.name: b.fraction for b in result.buckets}
    assert fractions["s"] == pytest.approx(25 / 256, abs=1e-4)  # the 5th smallest need
    assert fractions["m"] == pytest.approx(64 / 256, abs=1e-4)  # the 8th
    assert fractions["l"] == pytest.approx(100 / 256, abs=1e-4)  # the largest
    assert result.shares == pytest.approx({"s": 0.5, "m": 0.3, "l": 0.2, "full": 0.0})


def test_calibrate_rejects_bad_shares():
    with pytest.raises(BucketError, match="three non-negative shares"):
        calibrate([square(2)], token_size=8, shares=(0.5, 0.5))

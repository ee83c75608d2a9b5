import numpy as np
import pytest

from hilo_export.reference.procedural import FAMILIES, ProceduralError, procedural_image


def test_every_family_is_seeded_rgb_and_patterned():
    for family in FAMILIES:
        a = procedural_image(64, np.random.default_rng(3), family)
        b = procedural_image(64, np.random.default_rng(3), family)
        c = procedural_image(64, np.random.default_rng(4), family)
        assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
        assert np.array_equal(a, b) and not np.array_equal(a, c)
        # a pattern, not a flat field: both colours show
        assert a.astype(float).std(axis=(0, 1)).max() > 20, family


def test_a_grating_repeats_along_its_stripes():
    """What makes the probe fair: the hidden part is the continuation of what the context shows."""
    image = procedural_image(96, np.random.default_rng(0), "grating").astype(float)
    gray = image.mean(-1)
    # autocorrelation of a centred patch peaks again at some shift within the largest period (40 px)
    patch = gray[28:68, 28:68] - gray[28:68, 28:68].mean()
    best = max(
        np.corrcoef(patch.ravel(), (gray[28 + dy:68 + dy, 28 + dx:68 + dx]).ravel())[0, 1]
        for dy in range(-28, 29, 2) for dx in range(-28, 29, 2) if max(abs(dy), abs(dx)) >= 8
    )
    assert best > 0.9


def test_unknown_family_names_the_choices():
    with pytest.raises(ProceduralError, match="grating"):
        procedural_image(32, np.random.default_rng(0), "clouds")

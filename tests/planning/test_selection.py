"""Context policies (planning/selection.py): same budget, different tokens, reproducible."""

import numpy as np
import pytest
import torch

from hilo_export.planning import PlanError, PlannerConfig, plan_tokens
from hilo_export.planning.plan import HIGH_FREQ, MASK
from hilo_export.planning.selection import random_rank, ring_distance


def _image(seed: int, size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), 100, np.uint8)
    image[: size // 2, : size // 3] = rng.integers(0, 256, (size // 2, size // 3, 3))  # a textured corner
    return image


def _masks(size: int = 128) -> list[np.ndarray]:
    out = []
    for box in [(10, 30, 60, 80), (40, 100, 20, 90), (0, 128, 0, 70), (70, 74, 5, 9)]:
        mask = np.zeros((size, size), np.uint8)
        y0, y1, x0, x1 = box
        mask[y0:y1, x0:x1] = 255
        out.append(mask)
    out.append(np.zeros((size, size), np.uint8))  # empty
    return out


@pytest.mark.parametrize("sizing", ["exact", "padded"])
@pytest.mark.parametrize("max_high_freq", [None, 0.05])
def test_every_policy_plans_the_same_length(sizing, max_high_freq):
    image = _image(0)
    for mask in _masks():
        plans = {context: plan_tokens(image, mask, 8, "s,m,l", PlannerConfig(context=context, sizing=sizing,
                                                                               max_high_freq=max_high_freq))
                 for context in ("sobel", "ring", "random")}
        lengths = {c: (p.bucket, p.length, p.counts["mask"], p.counts["high_freq"], p.counts["fill"], p.high_freq_dropped)
                   for c, p in plans.items()}
        assert len(set(lengths.values())) == 1, lengths
        # the mask tokens are kept by every policy
        for plan in plans.values():
            kept = torch.zeros(plan.n_tokens, dtype=torch.bool)
            kept[plan.keep_indices] = True
            assert kept[plans["sobel"].kinds.reshape(-1) == MASK].all()


def test_policies_choose_different_context():
    image, mask = _image(1), _masks()[0]
    keeps = {c: plan_tokens(image, mask, 8, "s,m,l", PlannerConfig(context=c, sizing="exact")).keep_indices
             for c in ("sobel", "ring", "random")}
    assert not torch.equal(keeps["sobel"], keeps["ring"])
    assert not torch.equal(keeps["sobel"], keeps["random"])
    assert not torch.equal(keeps["ring"], keeps["random"])


def test_ring_keeps_the_nearest_tokens():
    image, mask = _image(2), _masks()[1]
    plan = plan_tokens(image, mask, 8, "s,m,l", PlannerConfig(context="ring", sizing="padded"))
    distance = ring_distance(plan.kinds == MASK).reshape(-1)
    kept = torch.zeros(plan.n_tokens, dtype=torch.bool)
    kept[plan.keep_indices] = True
    outside = plan.kinds.reshape(-1) != MASK
    assert distance[kept & outside].max() <= distance[~kept & outside].min()
    # the context tokens standing for the high-frequency region are the nearest of the kept ones
    context = plan.kinds.reshape(-1) == HIGH_FREQ
    assert distance[context].max() <= distance[kept & outside & ~context].min()


def test_ring_distance_is_chebyshev():
    mask = torch.zeros(7, 9, dtype=torch.bool)
    mask[2, 3] = True
    rows, cols = torch.meshgrid(torch.arange(7), torch.arange(9), indexing="ij")
    expected = torch.maximum((rows - 2).abs(), (cols - 3).abs()).float()
    assert torch.equal(ring_distance(mask), expected)
    assert torch.equal(ring_distance(torch.zeros(4, 6, dtype=torch.bool)), torch.full((4, 6), 6.0))


def test_random_is_reproducible_and_seeded():
    image, mask = _image(3), _masks()[0]

    def keep(seed):
        return plan_tokens(image, mask, 8, "s,m,l", PlannerConfig(context="random", context_seed=seed)).keep_indices

    assert torch.equal(keep(5), keep(5))
    assert not torch.equal(keep(5), keep(6))
    rank = random_rank((16, 16), 5)
    assert sorted(rank.reshape(-1).tolist()) == list(range(256))  # a permutation


def test_context_settings_are_checked():
    with pytest.raises(PlanError, match="context must be one of sobel, ring, random"):
        PlannerConfig(context="nearest")
    with pytest.raises(PlanError, match="context_seed"):
        PlannerConfig(context="random", context_seed=-1)


def test_manifest_without_a_context_means_sobel():
    data = PlannerConfig(context="random").to_dict()
    assert PlannerConfig.from_dict(data).context == "random"
    del data["context"], data["context_seed"]
    assert PlannerConfig.from_dict(data).context == "sobel"

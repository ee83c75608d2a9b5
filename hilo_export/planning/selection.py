"""Context policies: how the planner ranks the tokens outside the dilated mask.

Every policy fills the same budget: the bucket comes from the mask, and an exact plan's length
from the mask plus the (capped) high-frequency region of the regionalized Sobel score, whatever
the policy. Only which outside tokens fill that budget differs:

- ``sobel``: the highest regional frequency score first (the paper's selection);
- ``ring``: the tokens nearest the dilated mask first (Chebyshev distance in tokens), lower
  index first among equals;
- ``random``: a seeded draw: one permutation of the grid per ``(grid, context_seed)``, the same
  for every image and mask, so a given config plans the same tokens every time.

A policy is a ranking key per token (float32, higher first); mask tokens rank above every key.
The keys are exact small integers (ring, random) or the score itself (sobel), so the ONNX planner
repeats them bit for bit with TopK, which puts the lower index first among equals as the stable
sort here does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import RANDOM, RING, SOBEL, PlannerConfig

# Mask tokens' key: above every policy's key (scores lie in [0, 1], ring and random keys are <= 0).
MASK_KEY = 2.0


def ring_distance(mask_tokens: torch.Tensor) -> torch.Tensor:
    """float32 [h, w]: each token's Chebyshev distance (in tokens) to the nearest mask token; 0 in
    the mask, ``max(h, w)`` everywhere when the mask is empty.

    Counted as the ONNX planner does: the number of 3x3 dilations of the mask, out of
    ``max(h, w)``, that do not yet reach the token.
    """
    h, w = mask_tokens.shape
    reached = mask_tokens.float()[None, None]
    distance = torch.zeros(h, w)
    for step in range(max(h, w)):
        distance += 1.0 - reached[0, 0]
        if bool(reached.all()):  # the remaining steps add nothing
            break
        if step + 1 < max(h, w):
            reached = F.max_pool2d(reached, 3, stride=1, padding=1)
    return distance


def random_rank(grid: tuple[int, int], seed: int) -> torch.Tensor:
    """float32 [h, w]: each token's place in the seeded draw (0 = drawn first).

    numpy's PCG64 permutation: reproducible across platforms and library versions."""
    h, w = grid
    order = np.random.Generator(np.random.PCG64(seed)).permutation(h * w)
    rank = np.empty(h * w, dtype=np.float32)
    rank[order] = np.arange(h * w, dtype=np.float32)
    return torch.from_numpy(rank).reshape(h, w)


def context_key(config: PlannerConfig, mask_tokens: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """float32 [h, w]: the policy's ranking key for outside-mask tokens (higher first)."""
    if config.context == SOBEL:
        return score
    if config.context == RING:
        return -ring_distance(mask_tokens)
    if config.context == RANDOM:
        return -random_rank(tuple(mask_tokens.shape), config.context_seed)
    raise AssertionError(config.context)  # PlannerConfig validates the name


def ranking(config: PlannerConfig, mask_tokens: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """int64 [h * w]: every token, mask tokens first, then by the policy's key (ties: lower index first)."""
    key = torch.where(mask_tokens.reshape(-1), torch.tensor(MASK_KEY),
                      context_key(config, mask_tokens, score).reshape(-1))
    return torch.sort(key, descending=True, stable=True).indices


def region_size(config: PlannerConfig, mask_tokens: torch.Tensor, score: torch.Tensor) -> tuple[int, int]:
    """(uncapped, capped) size of the high-frequency region: outside-mask tokens whose regional
    score reaches the threshold, capped at ``max_high_freq`` of the grid. It sets every
    policy's context budget."""
    region = int(((score >= config.freq_threshold) & ~mask_tokens).sum())
    capped = region if config.max_high_freq is None else min(region, int(config.max_high_freq * score.numel()))
    return region, capped

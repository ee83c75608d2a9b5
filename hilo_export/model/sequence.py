"""Turning a full token grid into the HiLo sequence and back, for any model family.

Everything here works on plain tensors (``PlanTensors``) rather than a ``TokenPlan`` so the
same code runs eagerly and inside an exported graph, where these tensors are inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..planning.plan import TokenPlan
from .configs import ModelError
from .ops import token_gather, token_scatter


@dataclass(frozen=True)
class PlanTensors:
    """A plan as the tensors a compressed forward consumes.

    keep:  int64 [B, K]  full-resolution tokens of the sequence, in order
    pool:  float32 [L, N] row l averages the tokens of low-frequency block l (None: L = 0)
    block: int64 [B, N]  each token's low-frequency block, to upsample predictions (None: L = 0)
    """

    keep: torch.Tensor
    pool: torch.Tensor | None
    block: torch.Tensor | None

    @classmethod
    def from_plan(cls, plan: TokenPlan, batch: int, device: torch.device) -> "PlanTensors":
        keep = plan.keep_indices.to(device).expand(batch, -1)
        if plan.lowfreq is None:
            return cls(keep, None, None)
        pool = plan.lowfreq.pooling_matrix().to(device)
        block = plan.lowfreq.block_of_token().to(device).expand(batch, -1)
        return cls(keep, pool, block)

    @property
    def n_lowfreq(self) -> int:
        return 0 if self.pool is None else self.pool.shape[0]

    def first(self) -> "PlanTensors":
        """The same plan for a batch of one (for inputs shared by the batch, such as positions)."""
        return PlanTensors(self.keep[:1], self.pool, None if self.block is None else self.block[:1])


def compress(tokens: torch.Tensor, plan: PlanTensors) -> torch.Tensor:
    """[B, N, C] full grid -> [B, L + K, C]: low-frequency block means, then kept tokens."""
    kept = token_gather(tokens, plan.keep)
    if plan.pool is None:
        return kept
    # float32: in bf16 the block means (and so the block-centre positions) drift by up to 0.08 tokens
    lowfreq = torch.matmul(plan.pool, tokens.float()).to(tokens.dtype)
    return torch.cat([lowfreq, kept], dim=1)


def expand(sequence: torch.Tensor, plan: PlanTensors, n_tokens: int, fill: torch.Tensor | None,
           use_fill: torch.Tensor | None = None) -> torch.Tensor:
    """[B, L + K, C] predictions -> [B, N, C]: kept tokens scattered over the tokens without a prediction.

    Those take ``fill``; without ``fill`` (or where the bool [1] ``use_fill`` is false, as inside an
    engine graph, which takes both) their block's low-frequency prediction. This is the one
    implementation of that fill: the engine graphs export it (model/engine.py).
    """
    n_lowfreq = plan.n_lowfreq
    kept = sequence[:, n_lowfreq:]
    if fill is not None and (use_fill is None or plan.block is None):
        base = fill.to(sequence.device, sequence.dtype)
    elif plan.block is not None:
        base = token_gather(sequence[:, :n_lowfreq], plan.block)
        if fill is not None:
            base = torch.where(use_fill.to(torch.bool), fill.to(sequence.device, sequence.dtype), base)
    elif kept.shape[1] == n_tokens:
        base = sequence.new_zeros(sequence.shape[0], n_tokens, sequence.shape[2])  # every token is overwritten
    else:
        raise ModelError(
            "this plan drops tokens but has no low-frequency tokens to fill them from; pass fill= "
            "(a full-grid tensor for the tokens that get no prediction)"
        )
    return token_scatter(base, plan.keep, kept)

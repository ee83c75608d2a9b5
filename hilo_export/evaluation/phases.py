"""Where a pipeline call spends its time: planner, text encoders, VAE encode, denoising, VAE decode.

``PhaseTimer`` wraps the methods of one pipeline instance (never its class) for the length of
a ``with`` block: ``encode_prompt`` (text encoders), the VAE's ``encode`` and ``decode``, the
transformer's forward (each call is one denoising step, also kept one by one) and, under HiLo,
the transformer's ``prepare`` (the planner). ``other`` is the rest of the call (scheduler,
packing, image processing). ``EngineCalls`` counts a runtime's engine calls per bucket, so a
bench can show which engines each path really ran.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

PHASES = ("planner", "text_encoders", "vae_encode", "denoising", "vae_decode", "other")


class PhaseTimer:
    """``with PhaseTimer().timing(pipe) as t: pipe(...)``; then ``t.seconds`` (per phase and ``total``)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys((*PHASES, "total"), 0.0)
        self.step_seconds: list[float] = []

    @contextmanager
    def timing(self, pipe: Any) -> Iterator["PhaseTimer"]:
        with ExitStack() as stack:
            stack.enter_context(self._wrapped(pipe, "encode_prompt", "text_encoders"))
            stack.enter_context(self._wrapped(pipe.vae, "encode", "vae_encode"))
            stack.enter_context(self._wrapped(pipe.vae, "decode", "vae_decode"))
            stack.enter_context(self._wrapped(pipe.transformer, "forward", "denoising", steps=True))
            if hasattr(pipe.transformer, "prepare"):
                stack.enter_context(self._wrapped(pipe.transformer, "prepare", "planner"))
            start = time.perf_counter()
            try:
                yield self
            finally:
                self.seconds["total"] = time.perf_counter() - start
                self.seconds["other"] = max(0.0, self.seconds["total"] - sum(self.seconds[p] for p in PHASES if p != "other"))

    @contextmanager
    def _wrapped(self, owner: Any, name: str, phase: str, steps: bool = False) -> Iterator[None]:
        stock = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return stock(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                self.seconds[phase] += spent
                if steps:
                    self.step_seconds.append(spent)

        object.__setattr__(owner, name, timed)  # on the instance: the class's method shows through again after
        try:
            yield
        finally:
            object.__delattr__(owner, name)


class EngineCalls:
    """Counts ``runtime.run_bucket`` calls per bucket under the current ``mode`` label (e.g. "hilo", "dense")."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.mode = "other"
        self.counts: dict[str, dict[str, int]] = {}

    @contextmanager
    def counting(self) -> Iterator["EngineCalls"]:
        stock = self.runtime.run_bucket

        def counted(name: str, feeds: Any) -> Any:
            by_bucket = self.counts.setdefault(self.mode, {})
            by_bucket[name] = by_bucket.get(name, 0) + 1
            return stock(name, feeds)

        self.runtime.run_bucket = counted
        try:
            yield self
        finally:
            del self.runtime.run_bucket

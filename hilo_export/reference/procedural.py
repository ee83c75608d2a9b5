"""Procedural images whose hidden part is determined by what is around it.

A smooth fill (push-pull, biharmonic) can only continue the colours at a hole's border; on
these images the truth inside the hole is the pattern that the *context* shows: a grating's
stripes, a plaid, a lattice of dots, lines that cross the hole. The reference model trains on
them next to the photos, and the context probe (``hilo_export.evaluation.probe``) scores on
fresh draws of the same families, so a model that ignores its context tokens cannot score.

Everything is drawn from a ``numpy`` generator: the same seed gives the same images.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import HiLoError


class ProceduralError(HiLoError, ValueError):
    """An unknown procedural image family; the message lists the known ones."""


FAMILIES = ("grating", "plaid", "lattice", "lines")
PERIOD_PX = (10.0, 40.0)  # stripe periods: a few tokens, so one hole hides whole periods


def procedural_image(size: int, rng: np.random.Generator, family: str | None = None) -> np.ndarray:
    """One ``size`` x ``size`` uint8 RGB image of ``family`` (random family when None)."""
    if family is None:
        family = FAMILIES[int(rng.integers(len(FAMILIES)))]
    if family not in FAMILIES:
        raise ProceduralError(f"unknown procedural family {family!r}; choose from {list(FAMILIES)}")
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    draw = {"grating": _grating, "plaid": _plaid, "lattice": _lattice, "lines": _lines}[family]
    with np.errstate(over="ignore"):  # the soft edges' exp overflows far from an edge: 1 / inf = 0, as meant
        weight = draw(x, y, rng)  # [H, W] in [0, 1]: where the second colour shows
    low, high = _colours(rng)
    image = low[None, None] * (1 - weight[..., None]) + high[None, None] * weight[..., None]
    image = image + _shading(x, y, size, rng)[..., None]  # a gentle gradient, as light would give
    return (image.clip(0, 1) * 255).round().astype(np.uint8)


def _colours(rng):
    low = rng.uniform(0.0, 0.5, 3)
    high = rng.uniform(0.5, 1.0, 3)
    return (low, high) if rng.random() < 0.5 else (high, low)


def _shading(x, y, size, rng):
    gx, gy = rng.normal(0, 0.08, 2)
    return (gx * (x / size - 0.5) + gy * (y / size - 0.5))


def _wave(x, y, rng):
    """A plane wave: sinusoid or square (sharp stripes), random period, orientation and phase."""
    period = rng.uniform(*PERIOD_PX)
    angle = rng.uniform(0, math.pi)
    phase = rng.uniform(0, 2 * math.pi)
    s = np.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period + phase)
    if rng.random() < 0.5:
        sharpness = rng.uniform(2, 8)
        return 0.5 + 0.5 * np.tanh(sharpness * s)
    return 0.5 + 0.5 * s


def _grating(x, y, rng):
    return _wave(x, y, rng)


def _plaid(x, y, rng):
    return 0.5 * (_wave(x, y, rng) + _wave(x, y, rng))


def _lattice(x, y, rng):
    """Round dots on a (possibly rotated) square lattice."""
    period = rng.uniform(*PERIOD_PX)
    angle = rng.uniform(0, math.pi / 2)
    u = (x * math.cos(angle) + y * math.sin(angle)) / period + rng.uniform(0, 1)
    v = (-x * math.sin(angle) + y * math.cos(angle)) / period + rng.uniform(0, 1)
    du, dv = u - np.round(u), v - np.round(v)
    radius = rng.uniform(0.2, 0.4)
    return 1 / (1 + np.exp((np.sqrt(du ** 2 + dv ** 2) - radius) * 30))


def _lines(x, y, rng):
    """A few long straight bars across the whole image: a hole must join their ends."""
    weight = np.zeros_like(x)
    size = x.shape[0]
    for _ in range(int(rng.integers(2, 5))):
        angle = rng.uniform(0, math.pi)
        offset = rng.uniform(0.2, 0.8) * size
        width = rng.uniform(3, 10)
        distance = np.abs((x - size / 2) * math.sin(angle) - (y - size / 2) * math.cos(angle) + offset - size / 2)
        weight = np.maximum(weight, 1 / (1 + np.exp((distance - width / 2) * 2)))
    return weight

"""The evaluation stage's error: bad arguments to a measurement, or the ``eval`` extra missing."""

from __future__ import annotations

from ..errors import HiLoError, install_hint, require


class EvaluationError(HiLoError, ValueError):
    """A measurement that cannot run as asked; the message says what to change or install."""


def require_eval(module: str, what: str):
    """Import a module of the ``eval`` extra (matplotlib, scikit-image, polygraphy) where it is used."""
    return require(module, EvaluationError, f"{what} needs the eval extra: {install_hint('eval')}")

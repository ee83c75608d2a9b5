"""The export stage's error, below every export module so that none of them imports ``graph`` for it."""

from __future__ import annotations

from ..errors import HiLoError


class ExportError(HiLoError, RuntimeError):
    """Export failed or the exported file does not match torch; the message says what to change."""

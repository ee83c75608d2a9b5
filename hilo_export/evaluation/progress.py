"""Progress of long bench phases with an ETA, and the wall time and peak memory of a run.

``Eta`` counts units of work (engine calls, edits) and reports through the caller's
``progress`` callback: at the first unit, at the last, and whenever ``every_s`` seconds have
passed since the last line, so a phase whose units take minutes still speaks at least that
often (the CLI shows these lines on stderr).
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from typing import Callable


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class Eta:
    """``tick(detail)`` after each of ``total`` units: logs "phase i/n (detail), elapsed, ETA"."""

    def __init__(self, phase: str, total: int, progress: Callable[[str], None], every_s: float = 20.0):
        self.phase, self.total, self.progress, self.every_s = phase, max(int(total), 1), progress, every_s
        self.done = 0
        self.started = self.last = time.perf_counter()

    def tick(self, detail: str = "") -> None:
        self.done += 1
        now = time.perf_counter()
        if self.done not in (1, self.total) and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = now - self.started
        left = elapsed / self.done * (self.total - self.done)
        eta = "done" if self.done >= self.total else f"ETA {_duration(left)}"
        extra = f" ({detail})" if detail else ""
        self.progress(f"{self.phase} {self.done}/{self.total}{extra}: {_duration(elapsed)} elapsed, {eta}")


def peak_memory_gb() -> float:
    """Peak resident memory of this process so far, in GB (``getrusage``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024) / 1e9


def run_summary(started: float) -> dict[str, float]:
    """``wall_s`` since ``started`` (a ``time.time()``) and ``peak_memory_gb``, as the report stores them."""
    return {"wall_s": round(time.time() - started, 1), "peak_memory_gb": round(peak_memory_gb(), 2)}


def summary_line(summary: dict[str, float]) -> str:
    return f"bench done in {_duration(summary['wall_s'])} ({summary['wall_s']:.0f} s), peak memory {summary['peak_memory_gb']:.1f} GB"


def machine() -> dict[str, object]:
    """The machine a report was measured on."""
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__}

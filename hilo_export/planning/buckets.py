"""Token-budget buckets: named capacities that engines are built for.

A bucket is a fraction of the full token grid. At a given grid its capacity is the longest
sequence the DiT sees in it (kept full-resolution tokens plus low-frequency tokens). In exact
sizing a bucket is a range of lengths, (previous bucket's capacity, capacity]; in padded sizing
every request of a bucket runs at its capacity, one static shape (``kept_range``). ``full``
always exists: it keeps every token and adds no low-frequency tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import HiLoError

FULL = "full"
# The engines' one dynamic axis: the kept full-resolution tokens of a bucket (ONNX dim_param).
K_AXIS = "k_kept"

# Defaults: the table `hilo-export bench --sweep` measures the alternatives against. Its figures
# live in the sweep's report (docs/sweep), not here, where they would go stale.
DEFAULT_FRACTIONS = {"s": 0.20, "m": 0.45, "l": 0.75}

# Sequence lengths in multiples of 8 keep matrix kernels on their fast paths.
CAPACITY_ALIGN = 8


class BucketError(HiLoError, ValueError):
    """A bucket specification a user wrote is not valid."""


@dataclass(frozen=True)
class Bucket:
    name: str
    fraction: float

    @property
    def is_full(self) -> bool:
        return self.name == FULL

    def capacity(self, n_tokens: int, n_lowfreq: int) -> int:
        """Sequence length of this bucket on a grid of ``n_tokens`` tokens."""
        if self.is_full:
            return n_tokens
        aligned = math.ceil(self.fraction * n_tokens / CAPACITY_ALIGN) * CAPACITY_ALIGN
        return min(n_tokens, max(n_lowfreq, aligned))

    def kept(self, n_tokens: int, n_lowfreq: int) -> int:
        """Full-resolution tokens of this bucket: the engines' ``k_kept`` axis."""
        return n_tokens if self.is_full else self.capacity(n_tokens, n_lowfreq) - n_lowfreq


FULL_BUCKET = Bucket(FULL, 1.0)


def rooms(table: tuple[Bucket, ...], n_tokens: int, n_lowfreq: int) -> list[int]:
    """Full-resolution tokens each bucket of ``table`` holds (the manifest's ``kept``), ``full`` last.

    The one table bucket choice reads: the Python planner through ``choose_bucket``, the ONNX
    planner as constants of the same expression; servers read the ONNX planner's ``bucket``."""
    return [b.kept(n_tokens, 0 if b.is_full else n_lowfreq) for b in table]


def choose_bucket(room: list[int], n_mask: int) -> int:
    """Index of the smallest bucket whose room holds ``n_mask`` mandatory tokens (``full``, last,
    holds any). Rooms grow along the table, so it is the number of partial buckets too small:
    the ONNX planner computes exactly this sum."""
    return sum(r < n_mask for r in room[:-1])


def kept_range(table: tuple[Bucket, ...], index: int, n_tokens: int, n_lowfreq: int, sizing: str) -> dict[str, int]:
    """``k_kept`` of bucket ``table[index]`` as TensorRT's min/opt/max (the bucket's profile).

    Padded sizing, and ``full`` always: exactly its size. Exact sizing: one more than the
    previous bucket keeps (a plan lands in the smallest bucket that holds it; the first bucket
    from 1) up to its own size, with opt in the middle of that range rounded up to a multiple
    of ``CAPACITY_ALIGN``: the typical plan, when no traffic has been measured. A bucket whose
    capacity equals the previous one's (tiny grids) is never planned into; its range is its size.
    """
    bucket = table[index]
    high = bucket.kept(n_tokens, n_lowfreq)
    if sizing == "padded" or bucket.is_full:
        return {"min": high, "opt": high, "max": high}
    low = 1 if index == 0 else min(high, table[index - 1].kept(n_tokens, n_lowfreq) + 1)
    opt = min(high, math.ceil((low + high) / 2 / CAPACITY_ALIGN) * CAPACITY_ALIGN)
    return {"min": low, "opt": opt, "max": high}


def format_buckets(buckets: Iterable[Bucket]) -> str:
    """The ``--buckets`` spelling of a table (full left out: it is always there)."""
    return ",".join(f"{b.name}={b.fraction!r}" for b in buckets if not b.is_full)  # repr: exact round trip


def parse_buckets(spec: str | Iterable[str] | None) -> tuple[Bucket, ...]:
    """Parse ``"s,m,l"`` or ``"s=0.2,m=0.4"`` into buckets sorted by size, ``full`` last."""
    if spec is None:
        spec = ",".join(DEFAULT_FRACTIONS)
    hint = 'give buckets as a string such as "s,m,l" or "s=0.2,m=0.45", or a list of such names'
    if isinstance(spec, str):
        items = spec.split(",")
    elif isinstance(spec, (bytes, dict)) or not isinstance(spec, Iterable):
        raise BucketError(f"buckets {spec!r} ({type(spec).__name__}): {hint}")
    else:
        items = list(spec)
    buckets: dict[str, Bucket] = {}
    for raw in items:
        if not isinstance(raw, str):
            raise BucketError(f"bucket {raw!r} ({type(raw).__name__}) is not a name: {hint}")
        item = raw.strip()
        if not item or item == FULL:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if name == FULL:
            raise BucketError(f"bucket {item!r}: full always keeps every token; leave it out or give another name a fraction")
        if sep:
            try:
                fraction = float(value)
            except ValueError:
                raise BucketError(f"bucket {item!r}: {value!r} is not a number; write NAME=FRACTION, e.g. s=0.25") from None
        elif name in DEFAULT_FRACTIONS:
            fraction = DEFAULT_FRACTIONS[name]
        else:
            known = ", ".join(DEFAULT_FRACTIONS)
            raise BucketError(f"unknown bucket {name!r}: use one of {known}, or give a size as NAME=FRACTION (e.g. {name}=0.3)")
        if not name.isidentifier():
            raise BucketError(f"bucket name {name!r} must be a plain identifier such as s, m or xl")
        if not 0.0 < fraction < 1.0:
            raise BucketError(f"bucket {name!r}: fraction {fraction} must lie strictly between 0 and 1 of the token grid")
        if name in buckets:
            raise BucketError(f"bucket {name!r} is listed twice")
        buckets[name] = Bucket(name, fraction)
    ordered = sorted(buckets.values(), key=lambda b: b.fraction)
    return (*ordered, FULL_BUCKET)

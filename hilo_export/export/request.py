"""What a build is asked for (``BuildRequest``), checked when the request is made, and the sizes
refused before any work: a wrong field fails here with its name, not deep inside torch."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HiLoError
from ..folder.dtypes import PRECISIONS
from ..model.loading import DEFAULT_MODEL
from ..planning.buckets import BucketError, parse_buckets
from ..planning.plan import PlannerConfig


class BuildError(HiLoError, ValueError):
    """A build request that cannot be carried out; the message says how to fix it."""


# Sizes past these fail deep inside torch or numpy with an allocation error; refuse them first.
MAX_SIDE = 8192  # pixels per side (Flux itself is trained up to about 2 megapixels)
MAX_TOKENS = 65536  # tokens per image: 4096 x 4096 px of 16-px tokens, 2048 x 2048 of 8-px ones
MAX_BATCH = 4096  # the manifest schema's bound too
MAX_TEXT_LEN = 65536  # text tokens (Flux.1 uses 512)
# one denoising step's activations beyond this fit no machine a build is meant for
MAX_STEP_BYTES = 1 << 40


@dataclass
class BuildRequest:
    model: str = DEFAULT_MODEL
    buckets: str = "s,m,l"
    resolution: tuple[int, int] = (1024, 1024)  # width, height in pixels
    backend: str = "ort"
    precision: str = "fp32"
    out_dir: Path | None = None
    token_size: int | None = None  # default: the model's (16 for Flux, 8 for the reference model)
    batch: int = 1
    text_len: int | None = None  # default: the model's (512 for Flux)
    plugins: bool = False  # TensorRT only: the hilo ops as plugins (plugins/tensorrt), not inlined bodies
    config: PlannerConfig = field(default_factory=PlannerConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise BuildError(f"model {self.model!r}: give a built-in name, a model folder or a hub id (a string)")
        if isinstance(self.buckets, str) and not self.buckets.strip():
            raise BuildError('buckets "" names no bucket: give e.g. "s,m,l", or "full" to build only the full bucket')
        try:
            parse_buckets(self.buckets)
        except BucketError as err:
            raise BuildError(str(err)) from None
        self.resolution = _resolution(self.resolution)
        for name in ("backend", "precision"):
            if not isinstance(getattr(self, name), str):
                raise BuildError(f"{name} {getattr(self, name)!r} is not a name: use e.g. {name}='ort' / 'fp32'")
        if self.precision not in PRECISIONS:
            raise BuildError(f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.out_dir is not None:
            if not isinstance(self.out_dir, (str, os.PathLike)) or not str(self.out_dir):
                raise BuildError(f"out_dir {self.out_dir!r} ({type(self.out_dir).__name__}) is not a folder path")
            self.out_dir = Path(self.out_dir)
        _integer("batch", self.batch, 1, MAX_BATCH)
        if self.token_size is not None:
            _integer("token size", self.token_size, 1, MAX_SIDE)
        if self.text_len is not None:
            _integer("text length", self.text_len, 1, MAX_TEXT_LEN)
        if not isinstance(self.plugins, bool):
            raise BuildError(f"plugins must be True or False, got {self.plugins!r}")
        if not isinstance(self.config, PlannerConfig):
            raise BuildError(f"config must be a PlannerConfig (planner settings), got {type(self.config).__name__}")


def _integer(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BuildError(f"{name} must be a whole number, got {value!r} ({type(value).__name__})")
    if not low <= value <= high:
        raise BuildError(f"{name} must be at least {low} and at most {high}, got {value}")


def _resolution(value) -> tuple[int, int]:
    if isinstance(value, str):
        raise BuildError(f"resolution {value!r} is text: pass (width, height), or parse_resolution({value!r})")
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise BuildError(f"resolution {value!r} must be (width, height) in pixels")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise BuildError(f"resolution {tuple(value)!r} must be two whole numbers of pixels, e.g. (1024, 1024)")
    check_side(*value)
    return int(value[0]), int(value[1])


def parse_resolution(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise BuildError(f"resolution {text!r} is not WIDTHxHEIGHT, e.g. 1024x1024")
    width, height = int(match.group(1)), int(match.group(2))
    check_side(width, height)
    return width, height


def check_side(width: int, height: int) -> None:
    if width <= 0 or height <= 0 or max(width, height) > MAX_SIDE:
        raise BuildError(f"resolution {width}x{height}: each side must be 1 to {MAX_SIDE} pixels")


def default_out_dir(slug: str, resolution: tuple[int, int], root: Path = Path("engines")) -> Path:
    """``engines/<model>-<W>x<H>``: where build, edit and bench put (and find) a model's engines for one
    size, so builds for several sizes live side by side and every command reuses the others' builds."""
    return Path(root) / f"{slug}-{resolution[0]}x{resolution[1]}"


def step_bytes(config, batch: int, n_tokens: int, text_len: int) -> int:
    """About what one denoising step of a DiT with diffusers ``config`` holds at once, in float32: the
    sequence's activations (a few per block width) and one attention matrix per head."""
    heads = int(config.get("num_attention_heads", 1) or 1)
    width = heads * int(config.get("attention_head_dim", 1) or 1)
    sequence = n_tokens + text_len
    return 4 * batch * (16 * sequence * width + heads * sequence * sequence)


def machine_memory() -> int:
    """Bytes of memory of this machine (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_step_memory(config, batch: int, n_tokens: int, text_len: int, runs_here: bool) -> None:
    """Refuse sizes whose one step needs more memory than any machine (or this one, when the build
    runs the model here to check the graphs) has, before anything is exported."""
    need = step_bytes(config, batch, n_tokens, text_len)
    sizes = f"batch {batch}, {n_tokens} image and {text_len} text tokens"
    have = machine_memory()
    if need > MAX_STEP_BYTES or (runs_here and have and need > have):
        where = f"; this machine has {_gib(have)} and the build runs the model here to check it" if runs_here else ""
        raise BuildError(f"{sizes}: one step would need about {_gib(need)} of memory{where}; "
                         "choose a smaller --batch, --text-len or --resolution")


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n < 2**50 else f"10^{math.log10(n / 2**30):.0f} GiB"

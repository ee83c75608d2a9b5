"""The ``hilo-export`` command line. Thin: parsing, loading files, printing."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from .buckets import BucketError
from .examples import example_image_path, example_mask_path
from .plan import PlanError, PlannerConfig


def _binary_mask(mask: np.ndarray) -> np.ndarray:
    """Mask files saved as 0/1 (not 0/255) are common; a file cannot be passed as bool, so read them as binary."""
    return mask.astype(bool) if mask.max() == 1 else mask


@click.group()
@click.version_option(package_name="hilo-export")
def main() -> None:
    """Export diffusers DiTs with HiLo-Token compression for fast image editing."""


@main.command()
@click.option("--image", "image_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=example_image_path, show_default="the bundled example", help="Image to edit (any format Pillow reads).")
@click.option("--mask", "mask_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=example_mask_path, show_default="the bundled example", help="Edit mask, same size: white = edit.")
@click.option("--token-size", default=16, show_default=True, help="Pixels per DiT token side (16 for Flux).")
@click.option("--buckets", default="s,m,l", show_default=True, help="Buckets: names (s,m,l) or NAME=FRACTION; full is always added.")
@click.option("--dilation", default=PlannerConfig.dilation, show_default=True, help="Mask dilation, in tokens.")
@click.option("--lowfreq-factor", default=PlannerConfig.lowfreq_factor, show_default=True,
              help="Tokens per low-frequency block side (0: no low-frequency tokens).")
@click.option("--freq-threshold", default=PlannerConfig.freq_threshold, show_default=True,
              help="Regional frequency score (0-1) from which a kept token counts as high-frequency rather than "
                   "fill (the selection itself always takes the highest scores).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG of the selection here.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON object.")
def plan(image_path, mask_path, token_size, buckets, dilation, lowfreq_factor, freq_threshold, out, as_json) -> None:
    """Plan which tokens the DiT sees for one image and mask."""
    from PIL import Image, UnidentifiedImageError

    from .files import atomic_path
    from .plan import plan_tokens

    try:
        image = Image.open(image_path).convert("RGB")
        mask = _binary_mask(np.asarray(Image.open(mask_path).convert("L")))
    except (UnidentifiedImageError, OSError) as err:
        raise click.ClickException(f"cannot read image or mask: {err}") from None
    try:
        config = PlannerConfig(dilation=dilation, lowfreq_factor=lowfreq_factor or None, freq_threshold=freq_threshold)
        result = plan_tokens(np.asarray(image), mask, token_size=token_size, buckets=buckets, config=config)
    except (PlanError, BucketError) as err:
        raise click.ClickException(str(err)) from None

    if out is not None:
        from .viz import selection_picture

        try:
            with atomic_path(out) as tmp:
                selection_picture(image, result).save(tmp, format="PNG")
        except OSError as err:
            raise click.ClickException(f"cannot write {out}: {err}") from None
    if as_json:
        click.echo(json.dumps(result.to_json()))
        return
    c = result.counts
    click.echo(
        f"bucket {result.bucket}: {result.capacity} of {result.n_tokens} tokens ({result.kept_ratio:.0%}) "
        f"on a {result.grid[0]}x{result.grid[1]} grid; mask {result.mask_ratio:.1%} of the image\n"
        f"  mask {c['mask']}, high-frequency {c['high_freq']}, fill {c['fill']}, low-frequency {c['low_freq']}; "
        f"high-frequency tokens left out for lack of room: {result.high_freq_dropped}"
    )
    if out is not None:
        click.echo(f"selection picture: {out}")

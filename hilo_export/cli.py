"""The ``hilo-export`` command line. Thin: parsing, loading files, printing.

Exit codes: 0 success; 2 bad input (a usage error or any ``HiLoError``: the message says what to
change, no traceback); 3 ``validate`` found engines that fail its check; 1 an internal failure (a
bug or an environment fault, with its traceback).
Library code logs through ``logging``; this is the one place that shows it (on stderr).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import click
import numpy as np

from .cli_bench import bench, tiny_pipeline
from .cli_distill import distill
from .errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, HiLoError
from .examples import example_image_path, example_mask_path
from .export.trt_check import TENSORRT_VERSION
from .folder.backends import BACKENDS
from .folder.dtypes import PRECISIONS
from .model.loading import BUILTIN_NAMES, DEFAULT_MODEL, REFERENCE_MODELS
from .planning.config import CONTEXT_HELP
from .planning.inputs import DEFAULT_TOKEN_SIZE
from .planning.plan import CONTEXTS, SIZINGS, PlannerConfig, mask_from_file


class BadInput(click.ClickException):
    """Input the command cannot use; the message names the fix."""

    exit_code = EXIT_BAD_INPUT


class CheckFailed(click.ClickException):
    """The engines were checked and failed."""

    exit_code = EXIT_CHECK_FAILED


class _Group(click.Group):
    """Turns every ``HiLoError`` into one clear line and the bad-input exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HiLoError as err:
            raise BadInput(str(err)) from None


@click.group(cls=_Group)
@click.version_option(package_name="hilo-export")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr (no progress).")
@click.option("-v", "--verbose", is_flag=True, help="Debug messages too.")
def main(quiet: bool, verbose: bool) -> None:
    """Export diffusers DiTs with HiLo-Token compression for fast image editing."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    package_logger = logging.getLogger("hilo_export")
    package_logger.handlers[:] = [handler]
    package_logger.setLevel(level)
    package_logger.propagate = False


@main.command()
@click.option("--image", "image_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=example_image_path, show_default="the bundled example", help="Image to edit (any format Pillow reads).")
@click.option("--mask", "mask_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=example_mask_path, show_default="the bundled example", help="Edit mask, same size: white = edit.")
@click.option("--token-size", default=DEFAULT_TOKEN_SIZE, show_default=True, type=click.IntRange(min=1),
              help="Pixels per DiT token side (Flux's, as plan_tokens; 8 for the reference model, or use --engines).")
@click.option("--buckets", default="s,m,l", show_default=True, help="Buckets: names (s,m,l) or NAME=FRACTION; full is always added.")
@click.option("--dilation", default=PlannerConfig.dilation, show_default=True, help="Mask dilation, in tokens.")
@click.option("--lowfreq-factor", default=PlannerConfig.lowfreq_factor or 0, show_default=True, type=click.IntRange(min=0),
              help="Tokens per low-frequency block side (0: no low-frequency tokens).")
@click.option("--freq-threshold", default=PlannerConfig.freq_threshold, show_default=True,
              help="Regional frequency score (0-1) from which a kept token counts as high-frequency rather than "
                   "fill (the selection itself always takes the highest scores).")
@click.option("--sizing", type=click.Choice(SIZINGS), default=PlannerConfig.sizing, show_default=True,
              help="exact: each plan runs at its own length; padded: at its bucket's capacity (static shapes).")
@click.option("--context", type=click.Choice(CONTEXTS), default=PlannerConfig.context, show_default=True,
              help=CONTEXT_HELP)
@click.option("--context-seed", default=PlannerConfig.context_seed, show_default=True, type=click.IntRange(min=0),
              help="Seed of the random context policy.")
@click.option("--engines", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A built engine folder: plan with its token size, buckets and planner settings instead.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG of the selection here.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON object.")
def plan(image_path, mask_path, token_size, buckets, dilation, lowfreq_factor, freq_threshold, sizing, context, context_seed,
         engines, out, as_json) -> None:
    """Plan which tokens the DiT sees for one image and mask."""
    from PIL import Image

    from .files import atomic_path
    from .planning.plan import plan_tokens

    image, mask = _read_files(image_path, mask_path)
    from .runtime.runtime import HiLoRuntime

    if engines is not None:
        result = HiLoRuntime.load(engines, verify=False).plan(image, mask)
    else:
        config = replace(PlannerConfig(), dilation=dilation, lowfreq_factor=lowfreq_factor or None,
                         freq_threshold=freq_threshold, sizing=sizing, context=context, context_seed=context_seed)
        result = plan_tokens(image, mask, token_size=token_size, buckets=buckets, config=config)

    if out is not None:
        from .planning.picture import selection_picture

        try:
            with atomic_path(out) as tmp:
                selection_picture(Image.fromarray(image), result).save(tmp, format="PNG")
        except OSError as err:
            raise BadInput(f"cannot write {out}: {err}") from None
    if as_json:
        click.echo(json.dumps(result.to_json()))
        return
    c = result.counts
    click.echo(
        f"bucket {result.bucket}: {result.length} of {result.n_tokens} tokens (capacity {result.capacity}) ({result.kept_ratio:.0%}) "
        f"on a {result.grid[0]}x{result.grid[1]} grid; mask {result.mask_ratio:.1%} of the image\n"
        f"  mask {c['mask']}, context ({result.config.context}) {c['high_freq']}, fill {c['fill']}, "
        f"low-frequency {c['low_freq']}; high-frequency region tokens left out for lack of room: {result.high_freq_dropped}"
    )
    if out is not None:
        click.echo(f"selection picture: {out}")


def _echo(message: str) -> None:
    click.echo(message, err=True)


@main.command()
@click.option("--model", "model_name", default=DEFAULT_MODEL, show_default=True,
              help=f"A local diffusers folder, a model id in the local cache, or a built-in: {', '.join(BUILTIN_NAMES)}.")
@click.option("--buckets", default="s,m,l", show_default=True, help="Buckets to build (full is always added).")
@click.option("--resolution", default="1024x1024", show_default=True, help="Image size the engines serve, WIDTHxHEIGHT.")
@click.option("--backend", type=click.Choice(BACKENDS), default="ort", show_default=True)
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default="fp32", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Output folder [default: engines/<model>-<W>x<H>, where edit and bench look too].")
@click.option("--token-size", type=int, help="Pixels per DiT token side [default: the model's; 16 for Flux].")
@click.option("--batch", default=1, show_default=True, help="Batch size the engines are built for.")
@click.option("--text-len", type=int, help="Text tokens the engines take [default: the model's; 512 for Flux].")
@click.option("--sizing", type=click.Choice(SIZINGS), default=PlannerConfig.sizing, show_default=True,
              help="exact: one engine profile per bucket spanning its range of lengths, each plan at its own; "
                   "padded: every plan of a bucket at its capacity (one static shape per bucket, for CUDA graphs).")
@click.option("--context", type=click.Choice(CONTEXTS), default=PlannerConfig.context, show_default=True,
              help=CONTEXT_HELP)
@click.option("--context-seed", default=PlannerConfig.context_seed, show_default=True, type=click.IntRange(min=0),
              help="Seed of the random context policy (a constant of the build's ONNX planner).")
@click.option("--plugins", is_flag=True,
              help="TensorRT only: run the hilo token ops as the AOT Triton plugins of plugins/tensorrt "
                   "[default: TensorRT inlines their ONNX function bodies].")
def build(model_name, buckets, resolution, backend, precision, out_dir, token_size, batch, text_len, sizing, context,
          context_seed, plugins) -> None:
    """Export a DiT with HiLo ops and build one engine per bucket."""
    from .export import BuildRequest, parse_resolution
    from .export import build as run_build

    request = BuildRequest(
        model=model_name, buckets=buckets, resolution=parse_resolution(resolution), backend=backend, precision=precision,
        out_dir=out_dir, token_size=token_size, batch=batch, text_len=text_len, plugins=plugins,
        config=replace(PlannerConfig(), sizing=sizing, context=context, context_seed=context_seed),
    )
    folder = run_build(request)
    click.echo(str(folder))


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--verbose", is_flag=True, help="Show polygraphy's full comparison report.")
@click.option("--trt-check", is_flag=True,
              help="Only check, statically, that TensorRT's ONNX parser supports every node of every graph (runs nothing).")
@click.option("--tensorrt", "tensorrt_version", default=TENSORRT_VERSION, show_default=True,
              help="The TensorRT version whose published operator support --trt-check uses.")
def validate(folder, verbose, trt_check, tensorrt_version) -> None:
    """Compare every bucket's engine with the torch reference (polygraphy); exit 3 on mismatch.

    With --trt-check: check every graph against TensorRT's ONNX operator support instead; exit 3
    naming every node TensorRT would reject."""
    from .evaluation.validate import validate as run_validate

    if trt_check:
        from .export.trt_check import check_folder

        found = check_folder(folder, tensorrt_version)
        for kind, rejections in found.items():
            click.echo(f"graph {kind}: {'accepted' if not rejections else f'{len(rejections)} node(s) rejected'} "
                       f"by TensorRT {tensorrt_version}'s ONNX parser (static check)")
            for rejection in rejections:
                click.echo(f"  {rejection}")
        if any(found.values()):
            raise CheckFailed(f"TensorRT {tensorrt_version} would reject the nodes above")
        return
    results = run_validate(folder, progress=click.echo, verbose=verbose)
    failed = [r.bucket for r in results if not r.passed]
    if failed:
        raise CheckFailed(f"engines differ from torch beyond tolerance in bucket(s) {', '.join(failed)}")
    click.echo(f"all {len(results)} buckets match torch")


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def inspect(folder, as_json) -> None:
    """Show what a built engine folder holds."""
    from .folder.describe import describe_manifest
    from .folder.manifest import read_manifest

    manifest = read_manifest(folder)
    click.echo(json.dumps(manifest, indent=2) if as_json else describe_manifest(manifest, folder))


@main.command()
@click.option("--masks", "mask_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of mask images (white = edit).")
@click.option("--token-size", default=DEFAULT_TOKEN_SIZE, show_default=True, type=click.IntRange(min=1),
              help="Pixels per DiT token side (Flux's, as plan_tokens; 8 for the reference model).")
@click.option("--shares", default="0.5,0.3,0.2", show_default=True, help="Share of the masks to land in s, m, l.")
@click.option("--context", type=click.Choice(CONTEXTS), default=PlannerConfig.context, show_default=True,
              help=CONTEXT_HELP + " Capacities depend on the mask alone; the policy is echoed in the suggested options.")
def calibrate(mask_dir, token_size, shares, context) -> None:
    """Derive bucket capacities from a folder of masks and print the table."""
    from .planning.calibration import calibrate as run_calibrate
    from .planning.calibration import read_masks

    try:
        values = [float(s) for s in shares.split(",")]
    except ValueError:
        raise BadInput(f"--shares {shares!r}: give three numbers such as 0.5,0.3,0.2") from None
    result = run_calibrate(read_masks(mask_dir), token_size, values, replace(PlannerConfig(), context=context))
    click.echo(f"{result.n_masks} masks, token size {token_size}")
    click.echo(f"  {'bucket':6s} {'fraction':>8s} {'share of masks':>15s}")
    for b in result.buckets:
        click.echo(f"  {b.name:6s} {b.fraction:8.4f} {result.shares[b.name]:15.1%}")
    from .planning.buckets import format_buckets

    click.echo(f"use: --buckets {format_buckets(result.buckets)} --context {context}")


def _read_files(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB image and the mask as the planner reads files (any bit depth, scaled to 8 bits)."""
    from .images import read_gray, read_rgb

    return read_rgb(image_path), mask_from_file(read_gray(mask_path))


def _read_image_and_mask(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    image, mask = _read_files(image_path, mask_path)
    return image, np.asarray(mask) > (0 if mask.dtype == bool else 127)


@main.command()
@click.option("--model", default="reference", show_default=True,
              help="A built-in reference model (reference, reference-hilo), or a saved diffusers FluxFillPipeline "
                   "(folder or hub-cache id).")
@click.option("--engines", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A built folder of the model's engines [default: build (or reuse) them for the image's size].")
@click.option("--image", "image_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=example_image_path, show_default="the bundled example")
@click.option("--mask", "mask_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=example_mask_path, show_default="the bundled example", help="White = edit.")
@click.option("--prompt", default="", help="Text prompt (the reference model is unconditional and ignores it).")
@click.option("--steps", default=8, show_default=True, type=click.IntRange(min=1), help="Denoising steps.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--compare", is_flag=True, help="Also run the dense model: OUT.dense.png and a side-by-side OUT.compare.png.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to write the edited PNG.")
def edit(model, engines, image_path, mask_path, prompt, steps, seed, compare, out) -> None:
    """Inpaint the mask with the HiLo engines (a real flow-matching pipeline)."""
    from .evaluation.edit import comparison_picture, run_edit
    from .evaluation.fill_edit import run_fill_edit
    from .evaluation.metrics import psnr
    from .files import atomic_path

    image, mask = _read_image_and_mask(image_path, mask_path)
    if prompt and model in REFERENCE_MODELS:
        _echo("note: the reference model is unconditional; --prompt is ignored")
    if not mask.any():
        raise BadInput("the mask is empty: paint the region to edit white")
    if model in REFERENCE_MODELS:
        outcome = run_edit(image, mask, engines, steps=steps, seed=seed, compare=compare, model=model,
                           progress_bar=logging.getLogger("hilo_export").isEnabledFor(logging.INFO))  # off with -q
    else:
        outcome = run_fill_edit(model, image, mask, prompt, engines, steps=steps, seed=seed, compare=compare)
    from PIL import Image

    if outcome.image is not None:  # resized to the engines' size: compare and draw at that size
        image, mask = outcome.image, outcome.mask
    outputs = {out: Image.fromarray(outcome.hilo.image)}
    if outcome.dense is not None:
        outputs[out.with_name(f"{out.stem}.dense.png")] = Image.fromarray(outcome.dense.image)
        outputs[out.with_name(f"{out.stem}.compare.png")] = comparison_picture(image, mask, outcome)
    try:
        for path, picture in outputs.items():
            with atomic_path(path) as tmp:
                picture.save(tmp, format="PNG")
    except OSError as err:
        raise BadInput(f"cannot write {out}: {err}") from None
    hilo, plan = outcome.hilo, outcome.hilo.plan
    click.echo(f"HiLo: bucket {plan.bucket} ({plan.length} of {plan.n_tokens} tokens), {steps} steps, "
               f"{np.median(hilo.step_seconds) * 1e3:.0f} ms/step, {hilo.total_seconds:.2f} s in all -> {out}")
    if outcome.dense is not None:
        dense = outcome.dense
        click.echo(f"dense: {np.median(dense.step_seconds) * 1e3:.0f} ms/step, {dense.total_seconds:.2f} s in all; "
                   f"per-step speedup {np.median(dense.step_seconds) / np.median(hilo.step_seconds):.2f}x; "
                   f"in-mask PSNR HiLo vs dense {psnr(hilo.image, dense.image, mask):.2f} dB")
        click.echo(f"written: {', '.join(str(p) for p in outputs)}")


@main.command()
@click.option("--out", "out_dir", default=Path("engines/masks"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder for small/, medium/ and large/.")
@click.option("--resolution", default="1024x1024", show_default=True, help="Mask size, WIDTHxHEIGHT.")
@click.option("--per-category", default=32, show_default=True, help="Masks per category (small, medium, large).")
@click.option("--seed", default=0, show_default=True)
def masks(out_dir, resolution, per_category, seed) -> None:
    """Write the seeded mask suite (the paper's mask ratios and shape mix) as PNGs."""
    from .evaluation.masks import write_suite
    from .export import parse_resolution

    size = parse_resolution(resolution)
    summary = write_suite(out_dir, size, per_category, seed)
    for category, (count, ratio) in summary.items():
        click.echo(f"{category:6s} {count:3d} masks, mean mask ratio {ratio:.2%} -> {out_dir / category}")


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model repository to write (tritonserver --model-repository OUT).")
@click.option("--backend", type=click.Choice(BACKENDS),
              help="DiT models as onnxruntime (ort) or tensorrt_plan (trt) models [default: the folder's backend].")
@click.option("--max-batch", default=0, show_default=True,
              help="max_batch_size of hilo_edit_step (0: no batching); each row is one request, planned on its own.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def triton(folder, out_dir, backend, max_batch, force) -> None:
    """Write a Triton Inference Server model repository for a built engine folder."""
    from .serving.repository import write_repository

    write_repository(folder, out_dir, backend=backend, max_batch=max_batch, force=force)
    click.echo(str(out_dir))


main.add_command(bench)
main.add_command(tiny_pipeline)
main.add_command(distill)


if __name__ == "__main__":  # python -m hilo_export.cli
    main()

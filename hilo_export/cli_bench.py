"""The ``bench`` and ``tiny-pipeline`` commands of the ``hilo-export`` group (``cli.py`` adds them).

Thin, as the rest of the command line: parsing, then one library call. Bad settings raise
``BenchError`` (a ``HiLoError``), which the group turns into one line and exit code 2.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from .folder.backends import BACKENDS
from .model.loading import BUILTIN_NAMES, REFERENCE_MODELS, ModelError
from .planning.config import CONTEXT_HELP, CONTEXTS
from .planning.plan import SIZINGS, PlannerConfig


@click.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.json, report.md, the plots (and, for a pipeline, pictures/).")
@click.option("--model", help="A saved diffusers FluxFillPipeline (folder, or a model id in the local hub cache: never "
              f"downloaded), or a built-in: {', '.join(BUILTIN_NAMES)} [default: flux-shaped latency and the reference "
              "model's fidelity].")
@click.option("--engines", type=click.Path(file_okay=False, path_type=Path),
              help="Pipeline: a built engine folder of its transformer; built there when absent "
                   "[default: engines/<model>-<W>x<H>, reused when up to date].")
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Pipeline: a folder of photos, resized to the engines' size as the pipeline does [default: the bundled photos].")
@click.option("--masks", "masks_arg", default="suite", show_default=True,
              help="Pipeline: a folder of your masks (white = edit; binned into small/medium/large by mask ratio), or "
                   "'suite' for the seeded mask suite.")
@click.option("--prompt", default="", help="Pipeline: the prompt of every edit (the reference model ignores it).")
@click.option("--prompts", "prompts_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Pipeline: a text file, one prompt per image in the images' name order.")
@click.option("--steps", type=click.IntRange(min=1), help="Denoising steps [default: 8; quick: 2].")
@click.option("--seeds", help="Seeds, comma-separated; the floor compares dense edits of one seed with the next [default: 0,1].")
@click.option("--backend", type=click.Choice(BACKENDS), default="ort", show_default=True,
              help="Backend of engines built here.")
@click.option("--resolution", help="Pipeline: size the engines are built for when absent [default: 1024x1024; quick: 256x256].")
@click.option("--text-len", type=int, help="Pipeline: text tokens of engines built here [default: the model's; quick: 32].")
@click.option("--edits-per-category", type=click.IntRange(min=1),
              help="Pipeline: whole edits per category, each HiLo and dense on every seed [default: 4; quick: 1].")
@click.option("--per-category", type=click.IntRange(min=1),
              help="Suite masks planned and timed per category [default: 32 built-in, 8 pipeline; quick: 4].")
@click.option("--quick", is_flag=True, help="Small sizes: checks every step in a few minutes (built-in: tiny-flux "
              "latency at 320x192, 128 px fidelity; pipeline: 256 px, 2 steps, one edit per category).")
@click.option("--repeats", type=int, help="Interleaved latency rounds [default: 7; quick: 3, pipeline 15].")
@click.option("--sizing", type=click.Choice(SIZINGS), help=f"Planner sizing of the engines [default: {PlannerConfig.sizing}].")
@click.option("--context", type=click.Choice(CONTEXTS), help=CONTEXT_HELP + f" [default: {PlannerConfig.context}]")
@click.option("--fidelity-masks", type=int, help="Built-in: masks per category for fidelity [default: 4; quick: 1].")
@click.option("--skip-latency", is_flag=True, help="Built-in: fidelity only.")
@click.option("--skip-fidelity", is_flag=True, help="Built-in: latency only.")
@click.option("--sweep", is_flag=True,
              help="Built-in, instead: vary the planner's knobs, draw ideal speedup against fidelity (sweep.json/md/png).")
@click.option("--engines-root", type=click.Path(file_okay=False, path_type=Path), default=Path("engines"),
              show_default=True, help="Where engines are built, or reused when already built.")
@click.option("--torch-backend", is_flag=True,
              help="Built-in: also time the torch backend, beside the main backend in the same interleaved rounds.")
def bench(out_dir, model, engines, images_dir, masks_arg, prompt, prompts_file, steps, seeds, backend, resolution, text_len,
          edits_per_category, per_category, quick, repeats, sizing, context, fidelity_masks, skip_latency, skip_fidelity, sweep,
          engines_root, torch_backend) -> None:
    """Latency and fidelity of HiLo against dense per mask category: on your FluxFillPipeline (--model FOLDER),
    or on the built-in models (flux-shaped latency, reference-model fidelity)."""
    from .evaluation.bench import run_bench
    from .evaluation.report import markdown
    from .evaluation.settings import BenchError, BenchSettings
    from .evaluation.sweep import run_sweep, sweep_markdown
    from .export import parse_resolution

    seed_list = _parse_seeds(seeds) if seeds is not None else None
    if model is not None and model not in BUILTIN_NAMES:
        from .evaluation.pipeline_bench import PipelineBenchSettings, run_pipeline_bench
        from .evaluation.pipeline_report import pipeline_markdown

        for flag, given in (("--sweep", sweep), ("--skip-latency", skip_latency), ("--skip-fidelity", skip_fidelity),
                            ("--fidelity-masks", fidelity_masks is not None), ("--sizing", sizing is not None),
                            ("--context", context is not None),
                            ("--torch-backend", torch_backend)):
            if given:
                raise BenchError(f"{flag} applies to the built-in bench; a pipeline bench measures latency and fidelity "
                                 "(build engines with another --sizing or --context and pass them with --engines)")
        values = dict(engines=engines, images=images_dir, masks=masks_arg if masks_arg == "suite" else Path(masks_arg),
                      prompt=prompt, prompts_file=prompts_file, steps=steps, seeds=seed_list, backend=backend,
                      resolution=parse_resolution(resolution) if resolution else None, text_len=text_len,
                      edits_per_category=edits_per_category, per_category=per_category, repeats=repeats,
                      engines_root=engines_root)
        values = {k: v for k, v in values.items() if v is not None}
        make = PipelineBenchSettings.quick if quick else PipelineBenchSettings
        report = run_pipeline_bench(make(out_dir, model, **values))
        click.echo(pipeline_markdown(report))
        click.echo(f"report: {out_dir / 'report.md'}")
        return
    for flag, given in (("--engines", engines), ("--images", images_dir), ("--masks", masks_arg != "suite"),
                        ("--prompts", prompts_file), ("--resolution", resolution), ("--text-len", text_len),
                        ("--edits-per-category", edits_per_category)):
        if given:
            raise BenchError(f"{flag} applies to a pipeline bench (--model FOLDER); the built-in bench uses the bundled "
                             "photos and the mask suite")
    if prompt:
        click.echo("note: the built-in bench's models are unconditional (fidelity runs the reference model); "
                   "--prompt is ignored", err=True)
    overrides = {k: v for k, v in dict(repeats=repeats, fidelity_masks=fidelity_masks, steps=steps, per_category=per_category,
                                       seeds=tuple(seed_list) if seed_list else None).items() if v is not None}
    overrides.update(latency=not skip_latency, fidelity=not skip_fidelity, engines_root=engines_root, backend=backend,
                     latency_backends=("torch",) if torch_backend else ())
    if model is not None:
        overrides["latency_model"] = model
        if model in REFERENCE_MODELS:  # its 8-px tokens: the fidelity size is the latency figures' token grid
            overrides["latency_resolution"] = (128, 128) if quick else (512, 512)
            overrides["fidelity_model"] = model  # and its own edits are scored
    planner = {k: v for k, v in dict(sizing=sizing, context=context).items() if v is not None}
    if planner:
        overrides["planner"] = replace(PlannerConfig(), **planner)
    settings = BenchSettings.quick(out_dir, **overrides) if quick else BenchSettings(out_dir, **overrides)
    if sweep:  # planning and torch edits only: --skip-* and --repeats do not apply
        click.echo(sweep_markdown(run_sweep(settings)))
        click.echo(f"sweep: {out_dir / 'sweep.md'}, {out_dir / 'sweep.png'}")
        return
    report = run_bench(settings)
    click.echo(markdown(report))
    click.echo(f"report: {out_dir / 'report.md'}")


def _parse_seeds(text: str) -> tuple[int, ...]:
    from .evaluation.settings import BenchError

    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise BenchError(f"--seeds {text!r}: give whole numbers separated by commas, e.g. 0,1") from None
    if not seeds or any(s < 0 for s in seeds):
        raise BenchError(f"--seeds {text!r}: give whole numbers of at least 0, e.g. 0,1")
    return seeds


@click.command("tiny-pipeline")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the pipeline to (model_index.json and one folder per part).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the random weights.")
def tiny_pipeline(out_dir, seed) -> None:
    """Write a tiny random diffusers FluxFillPipeline, made offline from configs (for trying build, edit and bench)."""
    from .model.tiny_fill import save_tiny_fill_pipeline

    if out_dir.exists() and any(out_dir.iterdir()):
        raise ModelError(f"{out_dir} exists and is not empty: choose a new folder")
    save_tiny_fill_pipeline(out_dir, seed)
    click.echo(str(out_dir))

"""``hilo-export distill``: teach a model the HiLo sequence (the training stage behind one command)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from .model.loading import DEFAULT_MODEL
from .planning.config import CONTEXT_HELP, CONTEXTS
from .planning.plan import SIZINGS, PlannerConfig


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="reference (or its folder), or a FluxFillPipeline folder.")
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Any folder of images.")
@click.option("--steps", default=500, show_default=True, type=click.IntRange(min=1))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="The distilled model's folder.")
@click.option("--lora-rank", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=1e-4, show_default=True)
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True,
              help="After the warm-up: a cosine decay to zero at --steps, or constant.")
@click.option("--batch", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--resolution", type=click.IntRange(min=1),
              help="Square crop side, pixels [default: the 64x64-token grid the engines serve: 1024 for Flux, 512 for the reference model].")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--gradient-checkpointing", is_flag=True, help="Recompute block activations in backward (less memory).")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.pt (same settings, more --steps).")
@click.option("--buckets", default="s,m,l", show_default=True, help="The buckets the engines will have.")
@click.option("--sizing", type=click.Choice(SIZINGS), default=PlannerConfig.sizing, show_default=True)
@click.option("--dilation", default=PlannerConfig.dilation, show_default=True)
@click.option("--lowfreq-factor", default=PlannerConfig.lowfreq_factor, show_default=True)
@click.option("--context", type=click.Choice(CONTEXTS), default=PlannerConfig.context, show_default=True, help=CONTEXT_HELP)
@click.option("--context-seed", default=PlannerConfig.context_seed, show_default=True, help="The random policy's draw.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch [default: torch's].")
def distill(model, images, steps, out, lora_rank, lr, lr_schedule, batch, resolution, device, precision,
            gradient_checkpointing, resume, buckets, sizing, dilation, lowfreq_factor, context, context_seed, threads) -> None:
    """Teach a model the HiLo sequence (LoRA, learned low-frequency embedding, the dense model as teacher)."""
    from . import training
    from .evaluation.masks import sample_mask

    config = replace(PlannerConfig(), sizing=sizing, dilation=dilation, lowfreq_factor=lowfreq_factor or None,
                     context=context, context_seed=context_seed)
    request = training.DistillRequest(model, images, out, steps, lora_rank, lr, batch, resolution, device, precision, buckets,
                                      config, schedule=lr_schedule, gradient_checkpointing=gradient_checkpointing,
                                      resume=resume, threads=threads)
    click.echo(str(training.distill(request, masks=sample_mask).folder))

"""The context probe's two conditions on a training checkpoint, before exporting it.

    python scripts/probe_checkpoint.py ../runs/reference/checkpoint.pt --size 256 --per-family 2

Loads the checkpoint's EMA transformer and decoder and runs the probe as the bench and
``scripts/ablation.py`` do (8 steps, seed 0): per family, in-mask PSNR of the dense edit and of
the best classical fill against the truth (condition 1), and of HiLo and "core only" against the
dense edit (condition 2, the context cost). ``--dense-only`` skips condition 2 (a third of the
time); ``--dilation`` changes the planner's mask dilation, which sets how much context "core
only" still holds (a ring of that many tokens around the hole).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hilo_export.evaluation.ablation import Ablation
from hilo_export.evaluation.probe import run_probe
from hilo_export.evaluation.report import format_db
from hilo_export.planning.plan import PlannerConfig
from hilo_export.reference import model as ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="checkpoint.pt or best.pt of scripts/train_reference.py")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--per-family", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dense-only", action="store_true", help="condition 1 only")
    parser.add_argument("--dilation", type=int, default=PlannerConfig().dilation, help="mask dilation, in tokens")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    state = ref.load_checkpoint(args.checkpoint)
    ablation = Ablation(*ref.ema_models(state), config=PlannerConfig(dilation=args.dilation), steps=args.steps)
    selections = () if args.dense_only else ("hilo", "core_only")
    probe = run_probe(ablation, args.size, args.per_family, selections=selections, progress=lambda _: None)
    print(f"step {state['step']}, {args.size} px, {args.steps} steps, dilation {args.dilation}: in-mask PSNR (dB)")
    for family, summary in [("all", probe), *probe["families"].items()]:
        margins = summary["conditions"]
        line = (f"  {family:8s} dense {summary['psnr_mask_dense_vs_truth']:.2f}  best fill {summary['psnr_mask_best_fill_vs_truth']:.2f}"
                f"  model over fill {margins['model_over_best_fill_db']:+.2f}")
        if selections:
            cost = margins["context_cost_db"]
            line += (f"  | hilo vs dense {format_db(summary['psnr_mask_hilo_vs_dense'])}  core only {format_db(summary['psnr_mask_core_only_vs_dense'])}"
                     f"  context cost {'-' if cost is None else f'{cost:+.2f}'}")
        print(line)


if __name__ == "__main__":
    main()

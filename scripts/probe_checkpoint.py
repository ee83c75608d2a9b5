"""The context probe's first condition on a training checkpoint, before exporting it.

    python scripts/probe_checkpoint.py /work/runs/reference-v3/checkpoint.pt --size 256 --per-family 2

Loads the checkpoint's EMA transformer and decoder, edits every probe image densely (8 steps,
seed 0) and prints, pooled per family, in-mask PSNR of the edit and of the best classical fill
against the truth. The bench reports the same for the shipped model (``report.json`` ``probe``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hilo_export.evaluation.metrics import Pooled  # noqa: E402
from hilo_export.evaluation.probe import classical_fills, probe_set  # noqa: E402
from hilo_export.reference import model as ref  # noqa: E402
from hilo_export.reference.pipeline import ReferenceInpaintPipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="checkpoint.pt or best.pt of scripts/train_reference.py")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--per-family", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    state = ref.load_checkpoint(args.checkpoint)
    model, decoder = ref.ema_models(state)
    pipe = ReferenceInpaintPipeline.from_reference(model, decoder)
    pooled: dict[str, Pooled] = {"all": Pooled()}
    for item in probe_set(args.size, args.per_family):
        edit = pipe(item.image, item.mask, steps=args.steps, seed=0, progress=False).image
        for p in (pooled["all"], pooled.setdefault(item.family, Pooled())):
            p.add("dense", edit, item.image, item.mask)
            for name, filled in classical_fills(item.image, item.mask).items():
                p.add(name, filled, item.image, item.mask)
    print(f"step {state['step']}, {args.size} px, {args.steps} steps: in-mask PSNR to the truth (dB)")
    for family, p in pooled.items():
        best = max(p.psnr("push-pull"), p.psnr("biharmonic"))
        print(f"  {family:8s} dense {p.psnr('dense'):.2f}  best fill {best:.2f}  model over fill {p.psnr('dense') - best:+.2f}")


if __name__ == "__main__":
    main()

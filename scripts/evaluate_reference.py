"""Model-card numbers for the reference model: in-mask PSNR/SSIM to the ground truth, next to trivial fills.

    python scripts/evaluate_reference.py --out docs/reference [--checkpoint ../runs/reference/checkpoint.pt]

Held-out images only (hilo_export/data/eval), masks from the suite (seed 2: neither the bench's
nor training's), the dense model (no HiLo) and its decoder with the pipeline of ``hilo-export edit``.
Baselines: the hole painted with the mean known colour; the push-pull diffusion fill the model
is conditioned on; scikit-image's biharmonic inpainting.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hilo_export.evaluation import (
    CATEGORY_RATIOS,
    mask_suite,
    ssim,
)
from hilo_export.evaluation.fidelity import Fidelity
from hilo_export.evaluation.probe import classical_fills
from hilo_export.evaluation.settings import EVAL_IMAGES, eval_image
from hilo_export.files import atomic_path
from hilo_export.model import load_reference, reference_weights_dir
from hilo_export.reference import ReferenceInpaintPipeline
from hilo_export.reference import model as ref


def load_model(checkpoint: str | None) -> tuple[torch.nn.Module, ref.Decoder | None]:
    """(transformer, decoder): the shipped ones, or a training checkpoint's EMA weights."""
    if checkpoint is None:
        return load_reference(), ref.load_decoder(reference_weights_dir())
    return ref.ema_models(ref.load_checkpoint(checkpoint))


def baselines(image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    pixels = ref.to_tensor(image)
    hole = torch.from_numpy(mask).float()[None, None]
    fills = classical_fills(image, mask)
    return {"mean colour fill": ref.to_uint8(ref.mean_fill(pixels, hole)),
            "diffusion fill (push-pull)": fills["push-pull"],
            "biharmonic fill (scikit-image)": fills["biharmonic"]}


def evaluate(model, decoder, resolution: int, per_category: int, steps: int, seeds: list[int]) -> dict:
    pipe = ReferenceInpaintPipeline.from_reference(model, decoder)
    pipe.set_progress_bar_config(disable=True)
    suite = mask_suite((resolution, resolution), per_category, seed=2)
    results = {}
    for category in CATEGORY_RATIOS:
        fid, ssims = Fidelity(), {}
        for item in (m for m in suite if m.category == category):
            inside = item.mask > 0
            for name in EVAL_IMAGES:
                truth = eval_image(name, (resolution, resolution))
                edits = {f"model, seed {s}": pipe(truth, inside, steps=steps, seed=s).image for s in seeds}
                candidates = {"reference model": list(edits.values()), **{k: [v] for k, v in baselines(truth, inside).items()}}
                for method, images in candidates.items():
                    for edited in images:
                        fid.add(method, edited, truth, inside)
                        ssims.setdefault(method, []).append(ssim(edited, truth, inside))
        results[category] = {m: {"psnr": fid.psnr(m), "ssim": float(np.mean(ssims[m]))} for m in ssims}
        print(f"{resolution}px {category}: " + ", ".join(f"{m} {v['psnr']:.2f} dB" for m, v in results[category].items()),
              flush=True)
    return results


def sample_picture(model, decoder, resolution: int, steps: int, path: Path) -> None:
    """Truth, mask, push-pull fill, biharmonic fill, model edit: one row per held-out image (a medium mask)."""
    pipe = ReferenceInpaintPipeline.from_reference(model, decoder)
    pipe.set_progress_bar_config(disable=True)
    mask = next(m for m in mask_suite((resolution, resolution), 4, seed=2) if m.category == "medium").mask > 0
    rows = []
    for name in EVAL_IMAGES:
        truth = eval_image(name, (resolution, resolution))
        fills = baselines(truth, mask)
        shown = truth.copy()
        shown[mask] = (shown[mask] * 0.3).astype(np.uint8)
        edit = pipe(truth, mask, steps=steps, seed=0).image
        rows.append(np.concatenate([truth, shown, fills["diffusion fill (push-pull)"], fills["biharmonic fill (scikit-image)"],
                                    edit], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(path, format="PNG")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint", help="evaluate a training checkpoint's EMA weights instead of the shipped ones")
    parser.add_argument("--resolutions", default="256,512", help="comma-separated square sizes (default: %(default)s)")
    parser.add_argument("--per-category", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    model, decoder = load_model(args.checkpoint)
    start = time.time()
    card = {"checkpoint": args.checkpoint or str(reference_weights_dir()), "steps": args.steps, "images": list(EVAL_IMAGES),
            "masks_per_category": args.per_category, "seeds": args.seeds, "results": {}}
    for size in (int(s) for s in args.resolutions.split(",")):
        card["results"][str(size)] = evaluate(model, decoder, size, args.per_category, args.steps, [int(s) for s in args.seeds.split(",")])
    with atomic_path(out / "samples.png") as tmp:
        sample_picture(model, decoder, int(args.resolutions.split(",")[0]), args.steps, tmp)
    card["wall_s"] = round(time.time() - start, 1)
    with atomic_path(out / "card.json") as tmp:
        tmp.write_text(json.dumps(card, indent=1) + "\n")
    print(f"written {out / 'card.json'} and {out / 'samples.png'} in {card['wall_s']:.0f} s")


if __name__ == "__main__":
    main()

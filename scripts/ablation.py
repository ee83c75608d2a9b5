"""What each part of HiLo buys, at equal token budget: a table and one picture.

    python scripts/ablation.py --out docs/ablation                # 512 px: the 64x64 operating grid
    python scripts/ablation.py --out docs/probe-512 --per-category 0 --selections hilo,core_only   # the probe alone

Selections (``hilo_export.evaluation.ablation``): HiLo, random context tokens, no
low-frequency tokens, dilated mask only, core only (mask + low-frequency), crop-and-stitch.
On the held-out photos (suite masks, seed 1, as bench) and on the context probe. Writes
``ablation.json``, ``ablation.md`` and ``ablation.png`` (a photo and a probe image: the tokens
each selection sends, and its edit).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from hilo_export.evaluation.ablation import SELECTIONS, Ablation, run_photo_ablation
from hilo_export.evaluation.masks import mask_suite
from hilo_export.evaluation.metrics import psnr
from hilo_export.evaluation.probe import probe_set, run_probe
from hilo_export.evaluation.report import format_db
from hilo_export.evaluation.settings import eval_image
from hilo_export.files import atomic_path
from hilo_export.model import load_reference, reference_weights_dir
from hilo_export.reference import model as ref

LABELS = {"hilo": "HiLo", "random_context": "random context", "no_lowfreq": "no low-freq tokens",
          "mask_only": "dilated mask only", "core_only": "core only (dilated mask + low-freq)",
          "hole_only": "hole only (undilated mask + low-freq)", "crop": "crop-and-stitch"}


def table(result: dict) -> str:
    photos, probe = result["photos"], result["probe"]
    lines = [
        f"In-mask PSNR (dB), pooled; reference model, {result['steps']} steps, seed 0, "
        f"{photos['size'][0]} px (grid {photos['size'][0] // ref.TOKEN_SIZE}x{photos['size'][1] // ref.TOKEN_SIZE}). "
        f"Photos: {photos['edits']} compressed edits ({photos['edits_full']} planned into `full` left out); "
        f"probe: {probe['images'] - probe['edits_full']} procedural images. Tokens: share of the grid the DiT saw.",
        "",
        "| selection | tokens (photos) | photos: vs dense | photos: vs truth | tokens (probe) | probe: vs dense | probe: vs truth |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in result["selections"]:
        a, b = photos["selections"].get(name), probe["selections"][name]
        if a is None:  # no photos asked for
            a = {"token_ratio": None, "psnr_mask_vs_dense": None, "psnr_mask_vs_truth": None}
        lines.append(f"| {LABELS[name]} | {_pct(a['token_ratio'])} | {format_db(a['psnr_mask_vs_dense'])} | {format_db(a['psnr_mask_vs_truth'])} "
                     f"| {_pct(b['token_ratio'])} | {format_db(b['psnr_mask_vs_dense'])} | {format_db(b['psnr_mask_vs_truth'])} |")
    lines.append(f"| dense (reference) | 100% | - | {format_db(photos.get('psnr_mask_dense_vs_truth'))} | 100% | - "
                 f"| {probe['psnr_mask_dense_vs_truth']:.2f} |")
    lines.append(f"| best classical fill ({probe['best_fill']}) | - | - | - | - | - | {probe['psnr_mask_best_fill_vs_truth']:.2f} |")
    return "\n".join(lines) + "\n"


def paired_table(photos: dict) -> str:
    """Per edit, paired with HiLo's by case and noise seed: mean ± sd (n, 95% CI), dB."""
    def cell(d):
        return "-" if not d or not d.get("n") else f"{d['mean']:+.2f} ± {d['sd']:.2f} (n {d['n']}, {d['ci_low']:+.2f}..{d['ci_high']:+.2f})"

    lines = [f"Per edit (photos; noise seeds {photos.get('noise_seeds')}, random context averaged over "
             f"{photos.get('draws')} draws): mean ± sd (n, 95% CI), dB.", "",
             "| selection | PSNR vs dense | minus HiLo: vs dense | minus HiLo: vs truth |", "|---|---|---|---|"]
    for name, sel in photos["selections"].items():
        p = sel.get("paired", {})
        vs_dense = p.get("vs_dense") or {}
        lines.append(f"| {LABELS[name]} | {vs_dense['mean']:.2f} ± {vs_dense['sd']:.2f} |" if vs_dense.get("n", 0) > 1
                     else f"| {LABELS[name]} | - |")
        lines[-1] += f" {cell(p.get('vs_dense_minus_hilo'))} | {cell(p.get('vs_truth_minus_hilo'))} |"
    return "\n".join(lines) + "\n"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def picture(ablation: Ablation, examples: list[tuple[str, np.ndarray, np.ndarray]], path: Path,
            selections: tuple[str, ...] = SELECTIONS) -> None:
    """Per example two rows: the tokens each selection sends (dropped ones dimmed), then its edit."""
    font = ImageFont.load_default(size=14)
    label = 20
    rows = []
    for title, truth, inside in examples:
        dense = ablation.dense(truth, inside)
        shown = truth.copy()
        shown[inside] = (shown[inside] * 0.3).astype(np.uint8)
        top = [(f"{title}: input + mask", shown)]
        bottom = [("dense", dense)]
        for name in selections:
            edit = ablation.edit(name, truth, inside)
            kept = edit.kept.repeat(ref.TOKEN_SIZE, 0).repeat(ref.TOKEN_SIZE, 1)
            tokens = np.where(kept[..., None], shown, (shown * 0.25).astype(np.uint8))
            top.append((f"{LABELS[name]}: {edit.tokens} tokens", tokens))
            bottom.append((f"{psnr(edit.image, dense, inside):.1f} dB vs dense", edit.image))
        for row in (top, bottom):
            h, w = truth.shape[:2]
            canvas = Image.new("RGB", (w * len(row), h + label), (255, 255, 255))
            draw = ImageDraw.Draw(canvas)
            for i, (text, panel) in enumerate(row):
                canvas.paste(Image.fromarray(panel), (i * w, label))
                draw.text((i * w + 4, 2), text, fill=(0, 0, 0), font=font)
            rows.append(np.asarray(canvas))
    Image.fromarray(np.concatenate(rows, 0)).save(path, format="PNG")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--per-category", type=int, default=1, help="suite masks per category on every photo (0: no photos)")
    parser.add_argument("--per-family", type=int, default=2, help="probe images per procedural family")
    parser.add_argument("--selections", default=",".join(SELECTIONS), help="comma-separated (default: all)")
    parser.add_argument("--seeds", default="0,1", help="noise seeds of the photo edits (pairs: case x seed)")
    parser.add_argument("--suite-seeds", default="1", help="mask-suite seeds (1: bench's masks)")
    parser.add_argument("--draws", type=int, default=3, help="draws of the random context, averaged per pair")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    selections = tuple(args.selections.split(","))
    unknown = set(selections) - set(SELECTIONS)
    if unknown:
        parser.error(f"unknown selections {sorted(unknown)}; choose from {','.join(SELECTIONS)}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    ablation = Ablation(load_reference(), ref.load_decoder(reference_weights_dir()), steps=args.steps)
    photos = (run_photo_ablation(ablation, args.resolution, args.per_category, selections=selections,
                                 seeds=_ints(args.seeds), draws=args.draws, suite_seeds=_ints(args.suite_seeds))
              if args.per_category else {"size": [args.resolution] * 2, "edits": 0, "edits_full": 0, "selections": {}})
    result = {"steps": args.steps, "resolution": args.resolution, "selections": list(selections), "photos": photos,
              "probe": run_probe(ablation, args.resolution, args.per_family, selections=selections)}
    medium = next(m for m in mask_suite((args.resolution,) * 2, 1, seed=1) if m.category == "medium").mask > 0
    probe_item = next(i for i in probe_set(args.resolution, args.per_family) if i.family == "grating")
    examples = [("probe: grating", probe_item.image, probe_item.mask)]
    if args.per_category:
        examples.insert(0, ("coffee", eval_image("coffee", (args.resolution,) * 2), medium))
    with atomic_path(out / "ablation.png") as tmp:
        picture(ablation, examples, tmp, selections)
    result["wall_s"] = round(time.time() - start, 1)
    with atomic_path(out / "ablation.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    text = table(result) + ("\n" + paired_table(photos) if photos["edits"] else "")
    with atomic_path(out / "ablation.md") as tmp:
        tmp.write_text(text)
    print(text)
    print(f"written {out}/ablation.json, ablation.md, ablation.png in {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()

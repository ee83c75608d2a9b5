"""Write the image folder ``reference-hilo`` was distilled on: any folder of images will do for
``hilo-export distill``; this one makes the shipped model reproducible.

    python scripts/distill_images.py --out IMAGES      # needs the train extra (scikit-image, scikit-learn)

The scikit-image and scikit-learn sample photos the reference model trains on (the held-out
evaluation photos left out) whose shorter side is at least ``--min-side``, and ``--procedural``
seeded procedural images of ``--size`` pixels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from train_reference import HELD_OUT, sample_image_paths

from hilo_export.reference.procedural import procedural_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--min-side", type=int, default=256)
    parser.add_argument("--procedural", type=int, default=24)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    photos = 0
    for path in sample_image_paths():
        image = Image.open(path).convert("RGB")
        if path.name in HELD_OUT or min(image.size) < args.min_side:
            continue
        image.save(args.out / f"photo-{path.stem}.png")
        photos += 1
    rng = np.random.default_rng(args.seed)
    for i in range(args.procedural):
        Image.fromarray(procedural_image(args.size, rng)).save(args.out / f"procedural-{i:02d}.png")
    print(f"{photos} photos and {args.procedural} procedural images in {args.out}")


if __name__ == "__main__":
    main()

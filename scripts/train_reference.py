"""Train the reference inpainting DiT (``--model reference``) on images bundled with installed packages.

    python scripts/train_reference.py --out runs/reference              # train (resumes if a checkpoint exists)
    python scripts/train_reference.py --out runs/reference --export hilo_export/data/reference

Data: scikit-image's and scikit-learn's bundled sample images, minus the held-out evaluation
images (``HELD_OUT``). Random crops (progressively larger: ``--schedule``), random rescale
and flips; random masks of every shape in ``hilo_export.evaluation.masks``. Objective: rectified flow
with x0-residual prediction (see ``hilo_export.reference.model``), MSE weighted to the hole.
Seeded; a checkpoint every ``--save-every`` steps holds model, EMA, optimizer, RNG and loss
history, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hilo_export.evaluation.masks import random_mask  # noqa: E402
from hilo_export.reference import model as ref  # noqa: E402

# evaluation images: never trained on (coffee is also the bundled example)
HELD_OUT = ("coffee.png", "chelsea.png", "rocket.jpg")
SKIP = ("lfw_subset.npy", "lbpcascade_frontalface_opencv.xml", "motorcycle_disp.npz", "multipage.tif",
        "multipage_rgb.tif", "no_time_for_that_tiny.gif")
OUTSIDE_WEIGHT = 0.1  # loss weight of pixels outside the hole (their target correction is zero)
EMA_DECAY = 0.999


def sample_image_paths() -> list[Path]:
    """Every bundled sample image of scikit-image and scikit-learn (both installed for training)."""
    try:
        import skimage.data
        import sklearn.datasets
    except ImportError:
        sys.exit("training needs scikit-image and scikit-learn: pip install -e '.[train]'")
    folders = [Path(skimage.data.__file__).parent, Path(sklearn.datasets.__file__).parent / "images"]
    paths = sorted(p for f in folders for p in f.iterdir() if p.suffix in (".png", ".jpg", ".tif", ".gif"))
    return [p for p in paths if p.name not in SKIP]


def training_images(min_side: int) -> list[np.ndarray]:
    images = []
    for path in sample_image_paths():
        if path.name in HELD_OUT:
            continue
        image = np.asarray(Image.open(path).convert("RGB"))
        if min(image.shape[:2]) >= min_side:
            images.append(image)
    return images


def random_crop(images: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    image = images[rng.integers(len(images))]
    h, w = image.shape[:2]
    # a square of ``side`` pixels, resized to ``size``: random zoom from the whole short side down to 1:1
    side = int(rng.integers(size, min(h, w) + 1)) if min(h, w) > size else min(h, w)
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = Image.fromarray(image[y:y + side, x:x + side]).resize((size, size), Image.BICUBIC)
    crop = np.asarray(crop)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return crop


def make_batch(images, size, batch, rng):
    pixels = torch.cat([ref.to_tensor(random_crop(images, size, rng)) for _ in range(batch)])
    holes = torch.stack([torch.from_numpy(random_mask((size, size), rng) > 0).float()[None] for _ in range(batch)])
    return pixels, holes


def sample_t(batch: int, steps: int, rng: np.random.Generator) -> torch.Tensor:
    """Half on the sampler's own step times (what inference sees), half uniform."""
    levels = np.linspace(1, 1 / steps, steps)
    t = np.where(rng.random(batch) < 0.5, rng.choice(levels, batch), rng.uniform(0.02, 1, batch))
    return torch.from_numpy(t).float()


def loss_fn(model, pixels, holes, t, noise_gen):
    cond, prefill = ref.condition(pixels, holes)
    x0 = ref.pack(pixels)
    noise = torch.randn(x0.shape, generator=noise_gen)
    tt = t[:, None, None]
    noisy = (1 - tt) * x0 + tt * noise
    grid = (pixels.shape[-2] // ref.TOKEN_SIZE, pixels.shape[-1] // ref.TOKEN_SIZE)
    inputs = ref.model_inputs(noisy, cond, t, grid)
    residual = model(**inputs, return_dict=False)[0]
    weight = OUTSIDE_WEIGHT + (1 - OUTSIDE_WEIGHT) * ref.pack(holes.expand_as(pixels))
    return ((prefill + residual - x0) ** 2 * weight).sum() / weight.sum()


def parse_schedule(text: str) -> list[tuple[int, int, int]]:
    """'128x3000x16,256x2000x4' -> [(crop, steps, batch), ...]."""
    stages = []
    for part in text.split(","):
        crop, steps, batch = (int(v) for v in part.split("x"))
        if crop % ref.TOKEN_SIZE:
            raise SystemExit(f"crop {crop} is not a multiple of the token size {ref.TOKEN_SIZE}")
        stages.append((crop, steps, batch))
    return stages


def stage_at(stages, step):
    total = 0
    for crop, steps, batch in stages:
        total += steps
        if step < total:
            return crop, batch
    return None


def lr_at(step, total, peak, warmup=200):
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup)))) * 0.9 + peak * 0.1


def save_checkpoint(path, model, ema, opt, step, history, rng, noise_gen, args):
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                "history": history, "rng": rng.bit_generator.state, "noise": noise_gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                # plain values only: checkpoints load with weights_only=True
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}, tmp)
    os.replace(tmp, path)


def export_weights(checkpoint: Path, out: Path) -> None:
    """EMA weights as float16 safetensors + config (diffusers layout), and the loss curve.

    Written into a staging folder that replaces ``out`` only when complete: an interrupted
    export never leaves the shipped weights half-written.
    """
    state = ref.load_checkpoint(checkpoint)
    model = ref.new_model()
    model.load_state_dict(state["ema"])
    for param in model.parameters():  # float16 storage halves the file; load() computes in float32
        param.data = param.data.to(torch.float16)
    staging = out.with_name(f".{out.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    (staging / "diffusion_pytorch_model.safetensors").chmod(0o644)
    history = state["history"]
    (staging / "training.json").write_text(json.dumps({
        "steps": state["step"], "schedule": state["args"]["schedule"], "seed": state["args"]["seed"],
        "wall_s": round(history[-1]["wall_s"], 1) if history else 0.0, "loss": history,
    }, indent=1) + "\n")
    plot_loss(history, staging / "loss.png")
    previous = out.with_name(f".{out.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if out.exists():
        os.replace(out, previous)
    os.replace(staging, out)
    shutil.rmtree(previous, ignore_errors=True)
    print(f"exported EMA weights at step {state['step']} to {out}")


def plot_loss(history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.plot(steps, [h["loss"] for h in history], lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (hole-weighted MSE)")
    for s in sorted({h["crop"] for h in history}):
        first = next(h["step"] for h in history if h["crop"] == s)
        ax.axvline(first, color="gray", lw=0.5)
        ax.text(first, ax.get_ylim()[1], f" {s}px", va="top", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def train(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    stages = parse_schedule(args.schedule)
    total = sum(s for _, s, _ in stages)
    images = training_images(max(c for c, _, _ in stages) // 2)
    print(f"{len(images)} training images; {total} steps: {args.schedule}", flush=True)

    model = ref.new_model(args.seed).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    rng = np.random.default_rng(args.seed)
    noise_gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    step, history = 0, []
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        state = ref.load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, history = state["step"], state["history"]
        rng.bit_generator.state = state["rng"]
        noise_gen.set_state(state["noise"])
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed at step {step}", flush=True)
    wall0 = history[-1]["wall_s"] if history else 0.0
    start = time.perf_counter()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters", flush=True)
    running = None
    while (stage := stage_at(stages, step)) is not None:
        crop, batch = stage
        pixels, holes = make_batch(images, crop, batch, rng)
        t = sample_t(batch, args.sample_steps, rng)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, args.lr)
        loss = loss_fn(model, pixels, holes, t, noise_gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(EMA_DECAY, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - decay)
        step += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % args.log_every == 0:
            wall = wall0 + time.perf_counter() - start
            history.append({"step": step, "loss": round(running, 6), "crop": crop, "wall_s": round(wall, 1)})
            print(f"step {step}/{total} crop {crop} loss {running:.5f} lr {lr_at(step, total, args.lr):.2e} "
                  f"wall {wall / 60:.1f} min", flush=True)
        if step % args.save_every == 0 or stage_at(stages, step) is None:
            save_checkpoint(checkpoint, model, ema, opt, step, history, rng, noise_gen, args)
    print("training done", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="run folder (checkpoint.pt, resumable)")
    parser.add_argument("--schedule", default="128x2500x12,256x2000x4",
                        help="stages of CROPxSTEPSxBATCH, trained in order (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-steps", type=int, default=8, help="sampler steps the model is tuned for")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--export", metavar="DIR", help="write the EMA weights of --out's checkpoint to DIR and stop")
    args = parser.parse_args()
    if args.export:
        export_weights(Path(args.out) / "checkpoint.pt", Path(args.export))
    else:
        train(args)


if __name__ == "__main__":
    main()

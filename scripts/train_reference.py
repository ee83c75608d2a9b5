"""Train the reference inpainting DiT (``--model reference``) and its decoder.

    python scripts/train_reference.py --out ../runs/reference --schedule 64x3000x16,128x5500x8,256x6000x4 \
        --procedural 0.8 --lr 6e-4 --max-minutes 45       # train (resumes if a checkpoint exists)
    python scripts/train_reference.py --out ../runs/reference --export hilo_export/data/reference \
        --export-from checkpoint.pt                       # what v4 shipped from (default: best.pt)

Data: a ``--procedural`` share of procedural images whose hole only the context can predict
(``hilo_export.reference.procedural``: gratings, plaids, lattices, lines), the rest
scikit-image's and scikit-learn's bundled sample photos minus the held-out evaluation images
(``HELD_OUT``): random crops (``--schedule``), random rescale and flips. Random masks of
every shape in ``hilo_export.evaluation.masks``. Objective: rectified flow with x0-residual
prediction (see ``hilo_export.reference.model``), MSE weighted to the hole, plus the same
loss on the decoder's repainted hole (the decoder sees the DiT's prediction, detached).

Seeded; a checkpoint every ``--save-every`` steps holds model, decoder, their EMAs,
optimizer, RNG and loss history, so a killed run resumes where it stopped, and a later
session continues it with a longer ``--schedule``. Every ``--eval-every`` steps the EMA
is scored on a fixed validation batch (one-step x0 from pure noise, in-mask PSNR);
``best.pt`` keeps the best, and ``--export`` writes it.
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

from hilo_export.evaluation.masks import random_mask
from hilo_export.evaluation.metrics import psnr
from hilo_export.model.loading import load_reference
from hilo_export.reference import model as ref
from hilo_export.reference.procedural import procedural_image

# evaluation images: never trained on (coffee is also the bundled example)
HELD_OUT = ("coffee.png", "chelsea.png", "rocket.jpg")
SKIP = ("lfw_subset.npy", "lbpcascade_frontalface_opencv.xml", "motorcycle_disp.npz", "multipage.tif",
        "multipage_rgb.tif", "no_time_for_that_tiny.gif")
OUTSIDE_WEIGHT = 0.1  # loss weight of pixels outside the hole (their target correction is zero)


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


def make_batch(images, size, batch, rng, procedural=0.5):
    crops = [procedural_image(size, rng) if rng.random() < procedural else random_crop(images, size, rng)
             for _ in range(batch)]
    pixels = torch.cat([ref.to_tensor(crop) for crop in crops])
    holes = torch.stack([torch.from_numpy(random_mask((size, size), rng) > 0).float()[None] for _ in range(batch)])
    return pixels, holes


def sample_t(batch: int, steps: int, rng: np.random.Generator) -> torch.Tensor:
    """Half on the sampler's own step times (what inference sees), half uniform."""
    levels = np.linspace(1, 1 / steps, steps)
    t = np.where(rng.random(batch) < 0.5, rng.choice(levels, batch), rng.uniform(0.02, 1, batch))
    return torch.from_numpy(t).float()


def predict(model, decoder, pixels, holes, t, noise):
    """(DiT x0 tokens, decoded image) for clean ``pixels`` noised to flow time ``t``."""
    cond, prefill = ref.condition(pixels, holes)
    x0 = ref.pack(pixels)
    tt = t[:, None, None]
    noisy = (1 - tt) * x0 + tt * noise
    grid = (pixels.shape[-2] // ref.TOKEN_SIZE, pixels.shape[-1] // ref.TOKEN_SIZE)
    residual = model(**ref.model_inputs(noisy, cond, t, grid), return_dict=False)[0]
    predicted = prefill + residual
    # the decoder sees what the pipeline gives it: the prediction in the hole, the known pixels outside
    composite = torch.where(holes > 0, ref.unpack(predicted.detach(), grid), pixels)
    return predicted, decoder(composite, holes)


def loss_fn(model, decoder, pixels, holes, t, noise_gen):
    noise = torch.randn(ref.pack(pixels).shape, generator=noise_gen)
    predicted, decoded = predict(model, decoder, pixels, holes, t, noise)
    weight = OUTSIDE_WEIGHT + (1 - OUTSIDE_WEIGHT) * ref.pack(holes.expand_as(pixels))
    dit = ((predicted - ref.pack(pixels)) ** 2 * weight).sum() / weight.sum()
    dec = ((decoded - pixels) ** 2 * holes).sum() / (3 * holes.sum()).clamp_min(1)
    return dit, dec


def validation_batch(images, size, n, seed):
    """A fixed batch (half procedural, half photo crops) with its masks and noise."""
    rng = np.random.default_rng([seed, 99])
    crops = [procedural_image(size, rng) if i % 2 == 0 else random_crop(images, size, rng) for i in range(n)]
    pixels = torch.cat([ref.to_tensor(c) for c in crops])
    holes = torch.stack([torch.from_numpy(random_mask((size, size), rng) > 0).float()[None] for _ in range(n)])
    noise = torch.randn(ref.pack(pixels).shape, generator=torch.Generator().manual_seed(seed + 99))
    return pixels, holes, noise


@torch.no_grad()
def validate(model, decoder, batch) -> float:
    """Mean in-mask PSNR (dB) of the decoded one-step x0 prediction from pure noise."""
    pixels, holes, noise = batch
    _, decoded = predict(model, decoder, pixels, holes, torch.ones(pixels.shape[0]), noise)
    return float(np.mean([psnr(ref.to_uint8(decoded[i:i + 1]), ref.to_uint8(pixels[i:i + 1]), holes[i, 0].numpy() > 0)
                          for i in range(pixels.shape[0])]))


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


def lr_at(step, total, peak, warmup=100):
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup)))) * 0.9 + peak * 0.1


def save_checkpoint(path, model, ema, decoder, ema_decoder, opt, step, history, rng, noise_gen, args, best):
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "decoder": decoder.state_dict(),
                "ema_decoder": ema_decoder.state_dict(), "opt": opt.state_dict(), "step": step,
                "history": history, "rng": rng.bit_generator.state, "noise": noise_gen.get_state(),
                "torch_rng": torch.get_rng_state(), "args": plain_args(args), "best": best}, tmp)
    os.replace(tmp, path)


def plain_args(args) -> dict:
    """The command line as plain values: checkpoints load with weights_only=True, which refuses Paths."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def save_best(path, ema, ema_decoder, step, history, args, val_psnr):
    tmp = path.with_suffix(".tmp")
    torch.save({"ema": ema.state_dict(), "ema_decoder": ema_decoder.state_dict(), "step": step,
                "history": history, "args": plain_args(args), "val_psnr": val_psnr}, tmp)
    os.replace(tmp, path)


def export_weights(checkpoint: Path, out: Path) -> None:
    """EMA weights as float16 safetensors + config (diffusers layout), the decoder, and the loss curve.

    Written into a staging folder that replaces ``out`` only when complete: an interrupted
    export never leaves the shipped weights half-written.
    """
    state = ref.load_checkpoint(checkpoint)
    model = ref.new_model()
    model.load_state_dict(state["ema"])
    for param in model.parameters():  # float16 storage halves the file; load_reference() computes in float32
        param.data = param.data.to(torch.float16)
    staging = out.with_name(f".{out.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    (staging / "diffusion_pytorch_model.safetensors").chmod(0o644)
    from safetensors.torch import save_file

    save_file({k: v.to(torch.float16).contiguous() for k, v in state["ema_decoder"].items()}, staging / ref.DECODER_FILE)
    (staging / ref.DECODER_FILE).chmod(0o644)
    history = state["history"]
    args = state["args"]
    (staging / "training.json").write_text(json.dumps({
        "steps": state["step"], "schedule": args["schedule"], "seed": args["seed"], "lr": args["lr"],
        "procedural": args.get("procedural"), "init": args.get("init"), "checkpoint": str(checkpoint),
        "val_psnr_mask_db": state.get("val_psnr"),
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
    ax.plot(steps, [h["loss"] for h in history], lw=1, label="DiT x0 (hole-weighted MSE)")
    if any("decoder_loss" in h for h in history):
        ax.plot([h["step"] for h in history if "decoder_loss" in h],
                [h["decoder_loss"] for h in history if "decoder_loss" in h], lw=1, label="decoder (in-hole MSE)")
        ax.legend(fontsize=8, loc="lower left")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    validated = [h for h in history if "val_psnr" in h]
    if validated:  # what best.pt is chosen by
        val = ax.twinx()
        val.plot([h["step"] for h in validated], [h["val_psnr"] for h in validated], "k.--", lw=0.8,
                 label="validation, in-mask PSNR (dB)")
        val.set_ylabel("validation PSNR (dB)")
        val.legend(fontsize=8, loc="lower right")
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
    print(f"{len(images)} training photos, {args.procedural:.0%} procedural; {total} steps: {args.schedule}", flush=True)

    model = ref.new_model(args.seed).train()
    if args.init:  # warm start: the transformer of an earlier model (e.g. v1), same config
        model.load_state_dict(load_reference(Path(args.init)).state_dict())
    decoder = ref.Decoder().train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    ema_decoder = copy.deepcopy(decoder).eval().requires_grad_(False)
    params = list(model.parameters()) + list(decoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    rng = np.random.default_rng(args.seed)
    noise_gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    step, history, best = 0, [], None
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        state = ref.load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        decoder.load_state_dict(state["decoder"])
        ema_decoder.load_state_dict(state["ema_decoder"])
        opt.load_state_dict(state["opt"])
        step, history, best = state["step"], state["history"], state.get("best")
        rng.bit_generator.state = state["rng"]
        noise_gen.set_state(state["noise"])
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed at step {step}", flush=True)
    val_batch = validation_batch(images, stages[0][0], args.val_size, args.seed)
    wall0 = history[-1]["wall_s"] if history else 0.0
    start = time.perf_counter()
    deadline = start + args.max_minutes * 60 if args.max_minutes else math.inf
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, decoder {sum(p.numel() for p in decoder.parameters())}", flush=True)
    if best is None:
        best = validate(ema, ema_decoder, val_batch)
        print(f"validation at step {step}: {best:.2f} dB in-mask", flush=True)
    running = running_dec = None
    while (stage := stage_at(stages, step)) is not None:
        crop, batch = stage
        pixels, holes = make_batch(images, crop, batch, rng, args.procedural)
        t = sample_t(batch, args.sample_steps, rng)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, args.lr, args.warmup)
        dit_loss, dec_loss = loss_fn(model, decoder, pixels, holes, t, noise_gen)
        opt.zero_grad(set_to_none=True)
        (dit_loss + dec_loss).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema_decay, (1 + step) / (10 + step))
            for e, p in zip(list(ema.parameters()) + list(ema_decoder.parameters()), params):
                e.lerp_(p, 1 - decay)
        step += 1
        running = dit_loss.item() if running is None else 0.98 * running + 0.02 * dit_loss.item()
        running_dec = dec_loss.item() if running_dec is None else 0.98 * running_dec + 0.02 * dec_loss.item()
        out_of_time = time.perf_counter() > deadline
        if step % args.log_every == 0:
            wall = wall0 + time.perf_counter() - start
            entry = {"step": step, "loss": round(running, 6), "decoder_loss": round(running_dec, 6), "crop": crop,
                     "wall_s": round(wall, 1)}
            if step % args.eval_every == 0:
                entry["val_psnr"] = round(validate(ema, ema_decoder, val_batch), 3)
                if entry["val_psnr"] > best:
                    best = entry["val_psnr"]
                    save_best(out / "best.pt", ema, ema_decoder, step, history + [entry], args, best)
            history.append(entry)
            print(f"step {step}/{total} crop {crop} loss {running:.5f} decoder {running_dec:.5f} "
                  f"lr {lr_at(step, total, args.lr, args.warmup):.2e} wall {wall / 60:.1f} min"
                  + (f" val {entry['val_psnr']:.2f} dB (best {best:.2f})" if "val_psnr" in entry else ""), flush=True)
        if step % args.save_every == 0 or stage_at(stages, step) is None or out_of_time:
            save_checkpoint(checkpoint, model, ema, decoder, ema_decoder, opt, step, history, rng, noise_gen, args, best)
        if out_of_time:
            print(f"stopped at step {step}: --max-minutes {args.max_minutes} reached (resume with the same command)",
                  flush=True)
            return
    print("training done", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="run folder (checkpoint.pt, best.pt; resumable)")
    parser.add_argument("--schedule", default="128x3000x8",
                        help="stages of CROPxSTEPSxBATCH, trained in order (default: %(default)s)")
    parser.add_argument("--init", metavar="DIR", help="start the transformer from this diffusers folder (same config)")
    parser.add_argument("--procedural", type=float, default=0.5, help="share of procedural images (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--ema-decay", type=float, default=0.995, help="EMA of the weights that are exported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-steps", type=int, default=8, help="sampler steps the model is tuned for")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-minutes", type=float, help="stop (checkpointed, resumable) after this much wall time")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--eval-every", type=int, default=100, help="a multiple of --log-every")
    parser.add_argument("--val-size", type=int, default=16)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--export", metavar="DIR", help="write the EMA weights of --out's best.pt to DIR and stop")
    parser.add_argument("--export-from", default="best.pt", help="checkpoint file in --out to export (default: %(default)s)")
    args = parser.parse_args()
    if args.export:
        export_weights(Path(args.out) / args.export_from, Path(args.export))
    else:
        train(args)


if __name__ == "__main__":
    main()

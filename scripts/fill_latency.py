"""Latency of a whole Fill edit (planner + text encoding + steps + VAE), HiLo against dense, in one run.

    python scripts/fill_latency.py [--size 256] [--steps 8] [--rounds 3] [--flux-resolution 512x512]
                                   [--flux-rounds 2] [--no-flux] [--no-tiny]

Tiny pipeline: a random ``FluxFillPipeline`` from configs (hilo_export.model.tiny_fill), saved to
engines/tiny-fill and built there, edits the bundled photo and mask (resized by the pipeline) under
``hilo_export.apply``: HiLo (the planned bucket), dense (the same engines' ``full`` bucket) and the
stock torch transformer, interleaved round after round. Each phase is timed on the pipeline's own
calls (``encode_prompt``, the VAE's ``encode``/``decode``, the transformer, the planner).

flux-shaped: no Flux weights exist here, so its edit is composed: the planner on the bundled
photo plus ``steps`` x the measured step of each bucket's engine (interleaved rounds). Text
encoding and VAE of the real model are not included (the same time for HiLo and dense).
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

from hilo_export import HiLoRuntime, apply, plan_tokens
from hilo_export.examples import example_image, example_mask
from hilo_export.export import BuildRequest, build, parse_resolution
from hilo_export.model.adapters import adapter_for
from hilo_export.model.loading import load_model
from hilo_export.model.tiny_fill import save_tiny_fill_pipeline

PHASES = ("planner", "text", "steps", "vae", "total")


class PhaseTimer:
    """Seconds spent in each phase of one pipeline call, measured by wrapping the pipeline's own methods."""

    def __init__(self):
        self.seconds = dict.fromkeys(PHASES, 0.0)

    @contextmanager
    def timing(self, owner, name: str, phase: str):
        stock = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return stock(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        object.__setattr__(owner, name, timed)
        try:
            yield
        finally:
            object.__delattr__(owner, name)


def timed_edit(pipe, size: int, steps: int, text_len: int) -> dict[str, float]:
    timer = PhaseTimer()
    with timer.timing(pipe, "encode_prompt", "text"), timer.timing(pipe.vae, "encode", "vae"), \
            timer.timing(pipe.vae, "decode", "vae"), timer.timing(pipe.transformer, "forward", "steps"):
        prepare = getattr(pipe.transformer, "prepare", None)
        with timer.timing(pipe.transformer, "prepare", "planner") if prepare else nullcontext():
            start = time.perf_counter()
            pipe(prompt="remove the spoon", image=example_image(), mask_image=example_mask(), height=size, width=size,
                 num_inference_steps=steps, max_sequence_length=text_len, generator=torch.Generator().manual_seed(0),
                 output_type="np")
            timer.seconds["total"] = time.perf_counter() - start
    return timer.seconds


def spread(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.0f} ms ({min(values) * 1e3:.0f}-{max(values) * 1e3:.0f})"


def tiny(args) -> None:
    from diffusers import FluxFillPipeline

    folder = Path("engines/tiny-fill")
    if not (folder / "model_index.json").exists():
        save_tiny_fill_pipeline(folder)
    engines = build(BuildRequest(str(folder), resolution=(args.size, args.size), text_len=args.text_len,
                                 out_dir=Path("engines") / f"tiny-fill-{args.size}x{args.size}"), progress=lambda _: None)
    runtime = HiLoRuntime.load(engines)
    pipe = FluxFillPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    results = {mode: {p: [] for p in PHASES} for mode in ("HiLo", "dense", "stock torch")}
    bucket = None
    for round_ in range(args.rounds + 1):  # round 0 warms up the sessions and is dropped
        for mode in results:
            if mode == "stock torch":
                seconds = timed_edit(pipe, args.size, args.steps, args.text_len)
            else:
                with apply(pipe, runtime) as handle:
                    handle.dense = mode == "dense"
                    seconds = timed_edit(pipe, args.size, args.steps, args.text_len)
                    bucket = handle.plan.bucket if mode == "HiLo" else bucket
            if round_:
                for phase in PHASES:
                    results[mode][phase].append(seconds[phase])
    print(f"\ntiny FluxFillPipeline, {args.size}x{args.size} ({(args.size // 16) ** 2} tokens), {args.steps} steps, "
          f"{args.text_len} text tokens, HiLo bucket {bucket}; median (min-max) of {args.rounds} interleaved rounds")
    print("| run | planner | text encoding | steps | VAE | whole edit |")
    print("|---|---|---|---|---|---|")
    for mode, phases in results.items():
        print(f"| {mode} | " + " | ".join(spread(phases[p]) for p in PHASES) + " |")


def flux_shaped(args) -> None:
    width, height = parse_resolution(args.flux_resolution)
    engines = build(BuildRequest("flux-shaped", resolution=(width, height),
                                 out_dir=Path("engines") / f"flux-shaped-{width}x{height}"), progress=lambda _: None)
    runtime = HiLoRuntime.load(engines)
    image = np.asarray(example_image().resize((width, height)))
    mask = np.asarray(example_mask().resize((width, height))) > 127
    planner = []
    for _ in range(20):
        start = time.perf_counter()
        plan = runtime.plan(image, mask)
        planner.append(time.perf_counter() - start)
    model = load_model("flux-shaped").model
    inputs = adapter_for(model).example_inputs(model, 1, runtime.grid, runtime.manifest["text_len"], torch.float32)
    del model
    # the bundled mask planned into each bucket that holds it
    steps_by_bucket = {name: _plan_in(runtime, image, mask, name) for name in runtime.buckets}
    steps_by_bucket = {name: p for name, p in steps_by_bucket.items() if p.bucket == name}
    seconds = {name: [] for name in steps_by_bucket}
    for round_ in range(args.flux_rounds + 1):
        for name, bucket_plan in steps_by_bucket.items():
            start = time.perf_counter()
            runtime(plan=bucket_plan, **inputs)
            if round_:
                seconds[name].append(time.perf_counter() - start)
    full = statistics.median(seconds["full"])
    plan_s = statistics.median(planner)
    print(f"\nflux-shaped, {width}x{height} ({runtime.grid[0] * runtime.grid[1]} tokens), composed edit = planner + "
          f"{args.steps} x step (text encoding and VAE not included); the bundled mask plans bucket {plan.bucket}; "
          f"planner {spread(planner)}; median (min-max) of {args.flux_rounds} interleaved rounds")
    print("| bucket | kept tokens | step | composed edit | speedup vs full |")
    print("|---|---|---|---|---|")
    for name, values in seconds.items():
        edit = (0 if name == "full" else plan_s) + args.steps * statistics.median(values)
        print(f"| {name} | {runtime.buckets[name]['kept']} | {spread(values)} | {edit:.1f} s | "
              f"{(args.steps * full) / edit:.2f}x |")


def _plan_in(runtime: HiLoRuntime, image: np.ndarray, mask: np.ndarray, bucket: str):
    """The mask planned into ``bucket`` alone (``full`` when it does not fit there)."""
    if bucket == "full":
        return runtime.plan(image, mask, dense=True)
    return plan_tokens(image, mask, runtime.token_size, f"{bucket}={runtime.buckets[bucket]['fraction']}", runtime.config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="tiny pipeline: image side in pixels (multiple of 16)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--text-len", type=int, default=32, help="tiny pipeline: T5 tokens (max_sequence_length)")
    parser.add_argument("--flux-resolution", default="512x512")
    parser.add_argument("--flux-rounds", type=int, default=2)
    parser.add_argument("--no-flux", action="store_true", help="only the tiny pipeline")
    parser.add_argument("--no-tiny", action="store_true", help="only flux-shaped")
    args = parser.parse_args()
    if not args.no_tiny:
        tiny(args)
    if not args.no_flux:
        flux_shaped(args)


if __name__ == "__main__":
    main()

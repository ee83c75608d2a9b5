"""Per-step latency of each bucket's engine against the full engine, interleaved in one run.

    python scripts/bench_buckets.py [--model flux-shaped] [--resolution 1024x1024] [--rounds 3]

Builds (or reuses) the model's ORT engines, then times one denoising step per bucket, round
after round in the same process, and prints each bucket's median, its speedup over ``full``,
and the ideal speedup from FLOP counts (torch.utils.flop_counter on the same graphs). It also
times every bucket on sessions with the kept-token axis fixed to the bucket's size against
the shared dynamic-axis session (the ORT backend's ``fix_k`` choice).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from hilo_export.adapters import adapter_for
from hilo_export.backends import Profile
from hilo_export.backends.ort import OrtBackend
from hilo_export.build import BuildRequest, build, parse_resolution
from hilo_export.export import EngineGraph, GraphSpec, example_keep
from hilo_export.manifest import read_manifest
from hilo_export.models import BUILTIN_CONFIGS


def flops(model_name: str, spec: GraphSpec, kept: int) -> float:
    """FLOPs of one step of the engine graph, counted on meta tensors (nothing is computed)."""
    from diffusers import FluxTransformer2DModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = FluxTransformer2DModel(**BUILTIN_CONFIGS[model_name])
    graph = EngineGraph(adapter_for(model), model, spec)
    feed = graph.example_feed(example_keep(spec.n_tokens, kept))
    meta = [v.to("meta") for v in feed.values()]
    graph.pool = None if graph.pool is None else graph.pool.to("meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        graph(*meta)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flux-shaped")
    parser.add_argument("--resolution", default="1024x1024")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="engine folder [default: engines/<model>-<resolution>]")
    args = parser.parse_args()
    out = args.out or Path("engines") / f"{args.model}-{args.resolution}"
    folder = build(BuildRequest(args.model, resolution=parse_resolution(args.resolution), out_dir=out))
    manifest = read_manifest(folder)
    buckets = manifest["buckets"]
    print(f"{args.model} at {args.resolution}: grid {manifest['grid']}, text {manifest['text_len']} tokens, "
          f"ORT {manifest['backend']['version']} on {manifest['backend']['device']}, {torch.get_num_threads()} threads")

    feeds = {}
    for b in buckets:
        rng = np.random.default_rng(0)
        feed = {v["name"]: rng.standard_normal(v["shape"]).astype(v["dtype"]) for v in b["inputs"]}
        feed["keep_indices"] = example_keep(manifest["grid"][0] * manifest["grid"][1], b["kept"]).numpy()[None]
        feed["img_ids"] = np.abs(feed["img_ids"])
        feeds[b["name"]] = feed

    runners = {}
    for variant, fix_k in (("shared", False), ("fixed", True)):
        backend = OrtBackend(fix_k=fix_k)
        for kind, graph in manifest["graphs"].items():
            profiles = [Profile(b["name"], b["kept"]) for b in buckets if b["graph"] == kind]
            runners[variant, kind] = backend.load(folder / graph["files"][0]["path"], [], profiles)

    def step(variant: str, b: dict) -> float:
        start = time.perf_counter()
        runners[variant, b["graph"]].run(b["name"], feeds[b["name"]])
        return time.perf_counter() - start

    for variant in ("shared", "fixed"):  # warm-up: first runs allocate and pick kernels
        for b in buckets:
            step(variant, b)
    times = {(v, b["name"]): [] for v in ("shared", "fixed") for b in buckets}
    for r in range(args.rounds):
        for b in buckets:
            for variant in ("shared", "fixed"):
                times[variant, b["name"]].append(step(variant, b))
        print(f"  round {r + 1}/{args.rounds} done", flush=True)

    text = manifest["text_len"]
    graph_specs = {kind: GraphSpec(**{**g["spec"], "grid": tuple(g["spec"]["grid"])}) for kind, g in manifest["graphs"].items()}
    full_flops = flops(args.model, graph_specs["full"], buckets[-1]["kept"])
    full_ms = statistics.median(times["shared", "full"]) * 1e3
    print("\n| bucket | image tokens (kept + low-freq) | sequence with text | step, shared session | step, fixed-K session "
          "| speedup vs full | FLOP-ideal speedup | achieved / ideal |")
    print("|---|---|---|---|---|---|---|---|")
    for b in buckets:
        shared = statistics.median(times["shared", b["name"]]) * 1e3
        fixed = statistics.median(times["fixed", b["name"]]) * 1e3
        ideal = full_flops / flops(args.model, graph_specs[b["graph"]], b["kept"])
        speedup = full_ms / shared
        print(f"| {b['name']} | {b['capacity']} ({b['kept']} + {b['n_lowfreq']}) | {b['capacity'] + text} | "
              f"{shared:.0f} ms | {fixed:.0f} ms | {speedup:.2f}x | {ideal:.2f}x | {speedup / ideal:.0%} |")


if __name__ == "__main__":
    main()

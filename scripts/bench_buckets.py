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
import gc
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from hilo_export.export import BuildRequest, build, parse_resolution
from hilo_export.export.graph import EngineGraph, GraphSpec, example_keep
from hilo_export.folder import Profile, read_manifest
from hilo_export.folder.backends.ort import OrtBackend
from hilo_export.model import BUILTIN_CONFIGS, adapter_for


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

    def load(fix_k: bool, kind: str, only: str | None = None):
        profiles = [Profile(b["name"], b["kept"]) for b in buckets if b["graph"] == kind and only in (None, b["name"])]
        return OrtBackend(fix_k=fix_k).load(folder / manifest["graphs"][kind]["files"][0]["path"], [], profiles)

    def step(runner, b: dict) -> float:
        start = time.perf_counter()
        runner.run(b["name"], feeds[b["name"]])
        return time.perf_counter() - start

    # every bucket on the shared dynamic-axis session, against full, round after round
    shared = {kind: load(False, kind) for kind in manifest["graphs"]}
    for b in buckets:  # warm-up: first runs allocate and pick kernels
        step(shared[b["graph"]], b)
    times = {b["name"]: [] for b in buckets}
    for r in range(args.rounds):
        for b in buckets:
            times[b["name"]].append(step(shared[b["graph"]], b))
        print(f"  round {r + 1}/{args.rounds} done", flush=True)
    del shared
    gc.collect()

    text = manifest["text_len"]
    graph_specs = {kind: GraphSpec(**{**g["spec"], "grid": tuple(g["spec"]["grid"])}) for kind, g in manifest["graphs"].items()}
    full_flops = flops(args.model, graph_specs["full"], buckets[-1]["kept"])
    full_ms = statistics.median(times["full"]) * 1e3
    print("\n| bucket | image tokens (kept + low-freq) | sequence with text | step | speedup vs full "
          "| FLOP-ideal speedup | achieved / ideal |")
    print("|---|---|---|---|---|---|---|")
    for b in buckets:
        step_ms = statistics.median(times[b["name"]]) * 1e3
        ideal = full_flops / flops(args.model, graph_specs[b["graph"]], b["kept"])
        speedup = full_ms / step_ms
        print(f"| {b['name']} | {b['capacity']} ({b['kept']} + {b['n_lowfreq']}) | {b['capacity'] + text} | "
              f"{step_ms:.0f} ms | {speedup:.2f}x | {ideal:.2f}x | {speedup / ideal:.0%} |", flush=True)

    # each bucket on a session fixed to its size against a fresh dynamic-axis session,
    # interleaved; one pair at a time, since every session holds its own copy of the weights
    print("\n| bucket | shared dynamic-axis session | session fixed to the bucket | fixed / shared |")
    print("|---|---|---|---|")
    for b in buckets:
        if b["graph"] == "full":
            continue  # full's axis is static anyway
        pair = {"shared": load(False, b["graph"]), "fixed": load(True, b["graph"], only=b["name"])}
        pair_times = {name: [] for name in pair}
        for runner in pair.values():
            step(runner, b)
        for _ in range(args.rounds):
            for name, runner in pair.items():
                pair_times[name].append(step(runner, b))
        del pair
        gc.collect()
        shared_ms, fixed_ms = (statistics.median(pair_times[n]) * 1e3 for n in ("shared", "fixed"))
        print(f"| {b['name']} | {shared_ms:.0f} ms | {fixed_ms:.0f} ms | {fixed_ms / shared_ms:.2f} |", flush=True)

if __name__ == "__main__":
    main()

"""GPU check: step time per bucket of a FLUX.1-Fill-dev-shaped transformer through the torch backend.

One prepared run (at most ``--budget-s``, 8 minutes by default) on one GPU with torch installed:
full depth (19 double + 38 single blocks, 3072 wide), random bf16 weights made on the GPU (never
on the host), one ``EngineModule`` per bucket (s, m, l at their largest plan, and full) run by
the torch backend's ``TorchRunner`` (static shapes, CUDA graphs unless ``--no-cuda-graphs``,
``torch.compile`` with ``--compile``). Buckets are timed interleaved, round after round (CUDA
events, median of ``--rounds`` after warm-up); speedups are medians of per-round ratios to
``full``. Peak GPU memory is read at the end. Writes JSON (``--out``, else stdout).

Uses diffusers' ``FluxTransformer2DModel`` when diffusers is installed, else (or with
``--standin``) the plain-torch model of flux_standin.py, with the same shapes and forward.
``--tiny`` runs a tiny model on the CPU in seconds (what CI runs).

    python scripts/gpu_check.py --out gpu_check.json
    python scripts/gpu_check.py --tiny --standin
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time

import torch

from hilo_export.folder.backends.torch import TorchRunner
from hilo_export.model.adapters import adapter_for
from hilo_export.model.engine import EngineModule
from hilo_export.planning.buckets import FULL, parse_buckets, rooms
from hilo_export.planning.plan import LowFreqLayout, PlannerConfig

# FLUX.1-Fill-dev's transformer config: 384 input channels (latents, masked-image latents, mask), 64 out
FILL_DEV = dict(patch_size=1, in_channels=384, out_channels=64, num_layers=19, num_single_layers=38,
                attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                guidance_embeds=True, axes_dims_rope=(16, 56, 56))
TINY = dict(patch_size=1, in_channels=24, out_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(4, 6, 6))
TOKEN = 16  # pixels per Flux token side

log = logging.getLogger("gpu_check")


def model_class(standin: bool):
    if not standin:
        try:
            from diffusers import FluxTransformer2DModel

            return FluxTransformer2DModel, "diffusers"
        except ImportError:
            log.info("diffusers is not installed: using the plain-torch Flux of flux_standin.py")
    from flux_standin import FluxTransformer2DModel  # beside this script (the script's folder is on sys.path)

    return FluxTransformer2DModel, "flux_standin"


def make_model(cls, config: dict, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Random weights created on ``device`` in ``dtype`` directly: no host copy, no float32 detour."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), torch.no_grad():
            model = cls(**config)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def feeds_for(module: EngineModule, adapter, model, kept: int, text_len: int, device, dtype) -> dict[str, torch.Tensor]:
    """One step's engine inputs, made on the device: random activations, true positions, a random selection."""
    g = torch.Generator(device).manual_seed(0)
    h, w = module.grid
    feeds = {}
    for spec in adapter.active_inputs(model):
        shape = adapter.input_shape(model, spec, 1, module.grid, text_len)
        kind = dtype if spec.model_dtype else torch.float32
        if spec.name == "img_ids":
            rows = torch.arange(h * w, device=device)
            feeds[spec.name] = torch.stack([torch.zeros_like(rows), rows // w, rows % w], 1).to(kind)
        elif spec.name == "txt_ids":
            feeds[spec.name] = torch.zeros(shape, device=device, dtype=kind)
        elif spec.name in ("timestep", "guidance"):
            feeds[spec.name] = torch.full(shape, 0.5 if spec.name == "timestep" else 3.5, device=device, dtype=kind)
        else:
            feeds[spec.name] = torch.randn(shape, generator=g, device=device, dtype=kind)
    keep = torch.randperm(h * w, generator=g, device=device)[:kept].sort().values
    feeds["keep_indices"] = keep[None]
    feeds["fill"] = torch.zeros(1, h * w, adapter.out_channels(model), device=device, dtype=dtype)
    if "use_fill" in module.input_names:
        feeds["use_fill"] = torch.tensor([False], device=device)
    return feeds


class Clock:
    """Step time in seconds: CUDA events on a GPU, wall time on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def time(self, step) -> float:
        if not self.cuda:
            start = time.perf_counter()
            step()
            return time.perf_counter() - start
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model on the CPU (seconds; what CI runs)")
    parser.add_argument("--standin", action="store_true", help="the plain-torch Flux even when diffusers is installed")
    parser.add_argument("--resolution", type=int, default=1024, help="square image side in pixels [1024; --tiny: 256]")
    parser.add_argument("--text-len", type=int, default=512, help="text tokens [512; --tiny: 8]")
    parser.add_argument("--buckets", default="s,m,l")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds after warm-up (each times every bucket)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the modules (dynamic=False)")
    parser.add_argument("--no-cuda-graphs", action="store_true")
    parser.add_argument("--budget-s", type=float, default=480, help="stop timing rounds past this wall time")
    parser.add_argument("--out", help="JSON file [stdout]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    started = time.perf_counter()

    if args.tiny:
        device, dtype, config = torch.device("cpu"), torch.float32, TINY
        args.resolution = 256 if args.resolution == 1024 else args.resolution
        args.text_len = 8 if args.text_len == 512 else args.text_len
    elif torch.cuda.is_available():
        device, dtype, config = torch.device("cuda", torch.cuda.current_device()), torch.bfloat16, FILL_DEV
    else:
        parser.error("no GPU: torch.cuda.is_available() is False; run with --tiny on a CPU")
    torch.manual_seed(0)
    cls, implementation = model_class(args.standin)
    model = make_model(cls, config, device, dtype)
    adapter = adapter_for(model)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s: %.2fB parameters (%s) on %s", implementation, n_params / 1e9, dtype, device)

    grid = (args.resolution // TOKEN, args.resolution // TOKEN)
    n_tokens = grid[0] * grid[1]
    factor = PlannerConfig().lowfreq_factor
    n_lowfreq = LowFreqLayout(factor, grid).count
    table = parse_buckets(args.buckets)
    buckets = {}
    for bucket, kept in zip(table, rooms(table, n_tokens, n_lowfreq)):
        kind = FULL if bucket.is_full else "hilo"
        module = EngineModule(adapter, model, kind, grid, factor).to(device)  # the model is shared, not copied
        feeds = feeds_for(module, adapter, model, kept, args.text_len, device, dtype)
        buckets[bucket.name] = {"kept": kept, "sequence": kept + (0 if bucket.is_full else n_lowfreq),
                                "module": module, "feeds": feeds}

    cuda_graphs = device.type == "cuda" and not args.no_cuda_graphs
    fallback = None
    clock = Clock(device)
    for name, entry in buckets.items():  # warm-up: capture, kernel choice, compile
        entry["runner"] = TorchRunner(entry["module"], device, compile=args.compile, cuda_graphs=cuda_graphs)
        try:
            for _ in range(args.warmup):
                entry["runner"].run(name, entry["feeds"])
        except Exception as err:  # noqa: BLE001 - a capture failure is a finding: record it, time eagerly
            if not cuda_graphs:
                raise
            fallback = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            log.info("CUDA graph capture failed (%s); timing every bucket eagerly", fallback)
            cuda_graphs = False
            eager(buckets, device, args)
            break
        log.info("warmed up %s (%d tokens)", name, entry["sequence"])

    times: dict[str, list[float]] = {name: [] for name in buckets}
    rounds = 0
    while rounds < args.rounds and time.perf_counter() - started < args.budget_s:
        for name, entry in buckets.items():  # interleaved: drift hits every bucket alike
            times[name].append(clock.time(lambda e=entry, n=name: e["runner"].run(n, e["feeds"])))
        rounds += 1
    full = times[FULL]
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": "FLUX.1-Fill-dev shape" if config is FILL_DEV else "tiny",
        "implementation": implementation,
        "parameters": n_params,
        "dtype": str(dtype).removeprefix("torch."),
        "resolution": [args.resolution, args.resolution],
        "grid": list(grid),
        "text_len": args.text_len,
        "n_lowfreq": n_lowfreq,
        "cuda_graphs": cuda_graphs,
        "cuda_graph_error": fallback,
        "compile": args.compile,
        "rounds": rounds,
        "timer": "cuda events" if clock.cuda else "perf_counter",
        "buckets": [
            {"name": name, "kept": e["kept"], "sequence": e["sequence"],
             "step_ms_median": statistics.median(times[name]) * 1e3,
             "step_ms_quartiles": [q * 1e3 for q in _quartiles(times[name])],
             "speedup_vs_full_median": statistics.median(f / t for f, t in zip(full, times[name]))}
            for name, e in buckets.items()
        ],
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "wall_s": time.perf_counter() - started,
    }
    if rounds < args.rounds:
        log.info("budget reached after %d of %d rounds", rounds, args.rounds)
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0 if rounds >= 1 and all(math.isfinite(b["step_ms_median"]) for b in result["buckets"]) else 1


def eager(buckets: dict, device: torch.device, args) -> None:
    """Replace every runner by an eager one (after a failed capture) and warm them up."""
    for name, entry in buckets.items():
        entry["runner"] = TorchRunner(entry["module"], device, compile=args.compile, cuda_graphs=False)
        for _ in range(args.warmup):
            entry["runner"].run(name, entry["feeds"])


def _quartiles(values: list[float]) -> list[float]:
    if len(values) < 2:
        return [values[0], values[0]]
    q = statistics.quantiles(values, n=4)
    return [q[0], q[2]]


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of a runtime serving every bucket in rotation, against the weights' bytes.

    python scripts/bench_memory.py --model flux-shaped --resolution 512x512 --rounds 2

Builds (or reuses) the engines, then runs each session setting in its own process (a process's
peak RSS only grows), alternating the settings round by round: ``current`` is HiLoRuntime's ORT
sessions as they are (no arena, one shared mapping of the weights), ``ort-defaults`` the same with ONNX Runtime's CPU arena and memory patterns
switched back on, ``own-weights`` without the shared weight mapping (each graph's session loads and
pre-packs its own copy, as ORT does by default). Each child serves s, m, l and full in rotation and reports its peak RSS after
warm-up (the first pass) and at the end. The goal: peak RSS <= 1.5 x one DiT's weight
bytes + 1.5 GiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

GIB = 2**30


def peak_rss() -> int:
    """This process's own peak resident bytes (VmHWM).

    Not ``getrusage``'s ``ru_maxrss``: Linux carries that across ``execve`` from the process
    that forked the child, so every child reported the parent's peak (the build, 4.07 GiB at
    512x512) instead of its own.
    """
    return _status("VmHWM")


def current_rss() -> int:
    """Resident bytes now (VmRSS): what each bucket's first run leaves held, e.g. its session's weights."""
    return _status("VmRSS")


def _status(field: str) -> int:
    return int(Path("/proc/self/status").read_text().split(f"{field}:")[1].split()[0]) * 1024  # kB


def serve(folder: Path, setting: str, rotations: int) -> dict:
    """One child process: load the folder and serve every bucket ``rotations`` times."""
    import numpy as np

    from hilo_export.folder.backends.ort import OrtBackend
    from hilo_export.folder.manifest import read_manifest
    from hilo_export.runtime import HiLoRuntime

    backend = OrtBackend(arena=setting == "ort-defaults", share_weights=setting == "current")
    runtime = HiLoRuntime.load(folder, backend=backend)
    manifest = read_manifest(folder)
    rng = np.random.default_rng(0)
    order = [b["name"] for b in manifest["buckets"]]
    after_warmup, held = None, {}
    for rotation in range(rotations):
        for bucket in manifest["buckets"]:
            feeds = {}
            for value in bucket["inputs"]:
                if value["name"] == "keep_indices":
                    n = manifest["grid"][0] * manifest["grid"][1]
                    feeds["keep_indices"] = np.sort(rng.choice(n, value["shape"][1], replace=False))[None].astype(np.int64)
                else:
                    feeds[value["name"]] = rng.standard_normal(value["shape"]).astype(value["dtype"])
            runtime.run_bucket(bucket["name"], feeds)
            if rotation == 0:
                held[bucket["name"]] = current_rss()
        if rotation == 0:
            after_warmup = peak_rss()
    return {"setting": setting, "buckets": order, "peak_after_warmup": after_warmup, "peak": peak_rss(),
            "held_after_first_run": held}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flux-shaped")
    parser.add_argument("--resolution", default="512x512")
    parser.add_argument("--rounds", type=int, default=2, help="processes per setting, alternated")
    parser.add_argument("--rotations", type=int, default=2, help="passes over every bucket per process")
    parser.add_argument("--out", type=Path, help="engine folder [default: engines/<model>-<resolution>]")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(serve(Path(args.child[0]), args.child[1], args.rotations)))
        return

    from hilo_export.export import BuildRequest, build, default_out_dir, parse_resolution
    from hilo_export.folder.manifest import read_manifest

    resolution = parse_resolution(args.resolution)
    folder = build(BuildRequest(args.model, resolution=resolution, out_dir=args.out or default_out_dir(args.model, resolution)),
                   progress=lambda m: print(m, file=sys.stderr))
    manifest = read_manifest(folder)
    weights = manifest["weights"]["files"][0]["bytes"]  # the one file every graph's session reads its weights from
    graphs = {kind: g["files"][0]["bytes"] for kind, g in manifest["graphs"].items()}
    goal = 1.5 * weights + 1.5 * GIB
    print(f"{args.model} at {resolution[0]}x{resolution[1]}: one DiT's weights {weights / GIB:.2f} GiB (shared file); "
          "ONNX files " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in graphs.items())
          + f"; goal: peak RSS <= {goal / GIB:.2f} GiB")
    results: dict[str, list[dict]] = {"current": [], "own-weights": [], "ort-defaults": []}
    for round_ in range(args.rounds):
        for setting in results if round_ % 2 == 0 else reversed(list(results)):
            out = subprocess.run([sys.executable, __file__, "--rotations", str(args.rotations), "--child", str(folder), setting],
                                 check=True, capture_output=True, text=True).stdout
            results[setting].append(json.loads(out.strip().splitlines()[-1]))
    print(f"serving {', '.join(results['current'][0]['buckets'])} in rotation, {args.rotations} passes per process, "
          f"{args.rounds} processes per setting (alternated)")
    print(f"{'setting':14s} {'peak after warm-up':>20s} {'peak':>18s} {'peak / goal':>12s}")
    for setting, runs in results.items():
        warm = [r["peak_after_warmup"] / GIB for r in runs]
        peak = [r["peak"] / GIB for r in runs]
        print(f"{setting:14s} {min(warm):8.2f}-{max(warm):.2f} GiB {min(peak):8.2f}-{max(peak):.2f} GiB "
              f"{max(peak) * GIB / goal:11.2f}")
    print("resident after each bucket's first run (the full graph's session is made at its first run):")
    for setting, runs in results.items():
        held = runs[0]["held_after_first_run"]
        print(f"{setting:14s} " + "  ".join(f"{name} {value / GIB:.2f} GiB" for name, value in held.items()))


if __name__ == "__main__":
    main()

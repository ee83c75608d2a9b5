"""Run a TensorRT-built folder from C++ (hilo_run_engine) and from Python; compare the outputs.

    python scripts/compare_cpp_engine.py FOLDER --exe build/cpp/hilo_run_engine

For every bucket it writes random inputs (a valid random plan for keep_indices) as raw files,
runs the C++ runner on them, runs the same feeds through HiLoRuntime.run_bucket, and prints
the relative difference of every output. Both run the same engine file, so they should agree
to rounding; exits 1 when an output differs by more than --tolerance. Needs a GPU, TensorRT
and a folder built with --backend trt (with or without --plugins).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def feeds_for(bucket: dict, n_tokens: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in bucket["inputs"]:
        if spec["name"] == "keep_indices":
            batch, kept = spec["shape"]
            keep = np.sort(rng.choice(n_tokens, size=kept, replace=False)).astype(np.int64)
            feeds["keep_indices"] = np.ascontiguousarray(np.broadcast_to(keep, (batch, kept)))
        else:
            feeds[spec["name"]] = rng.standard_normal(spec["shape"]).astype(spec["dtype"])
    return feeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--exe", type=Path, required=True, help="the hilo_run_engine binary (cmake --build ...)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |C++ - Python| / max |Python| per output")
    args = parser.parse_args()

    from hilo_export.export import relative_error
    from hilo_export.runtime import HiLoRuntime

    runtime = HiLoRuntime.load(args.folder)
    if runtime.manifest["backend"]["name"] != "trt":
        print(f"{args.folder} was built with --backend {runtime.manifest['backend']['name']}; build it with --backend trt")
        return 2
    n_tokens = runtime.grid[0] * runtime.grid[1]
    rng = np.random.default_rng(0)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        feeds = {}
        for bucket in runtime.manifest["buckets"]:
            folder = Path(tmp) / bucket["name"]
            folder.mkdir()
            feeds[bucket["name"]] = feeds_for(bucket, n_tokens, rng)
            for name, array in feeds[bucket["name"]].items():
                array.tofile(folder / f"{name}.bin")
        run = subprocess.run([str(args.exe), str(args.folder), "--feeds", tmp], capture_output=True, text=True, check=False)
        print(run.stdout + run.stderr, end="")
        if run.returncode != 0:
            return 1
        for bucket in runtime.manifest["buckets"]:
            expected = runtime.run_bucket(bucket["name"], feeds[bucket["name"]])
            for spec in bucket["outputs"]:
                got = np.fromfile(Path(tmp) / bucket["name"] / f"{spec['name']}.out.bin", dtype=spec["dtype"])
                error = relative_error(got.reshape(spec["shape"]), expected[spec["name"]].astype(np.float32))
                worst = max(worst, error)
                print(f"{bucket['name']:5s} {spec['name']:15s} relative |C++ - Python| {error:.2e}")
    print("C++ and Python agree" if worst <= args.tolerance else f"C++ and Python differ by {worst:.2e}")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())

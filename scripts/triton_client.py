"""Call hilo_edit_step on a running Triton server (a repository from hilo-export triton).

    python scripts/triton_client.py --image IMG --mask MASK [--inputs step.npz | --random]
        [--url localhost:8000] [--out output.npy] [--check ENGINE_FOLDER]

The image and mask are read with Pillow (mask: white = edit) at the size the engines were
built for. The DiT's full-grid inputs (hidden_states, encoder_hidden_states, ...) come from
an .npz file with one array per input name, or, with --random, are made up for a smoke test
(random values; img_ids as the token grid; txt_ids zero). --check runs the same request
through HiLoRuntime on a local copy of the engine folder and prints the difference.
Needs tritonclient[http]: pip install 'hilo-export[serving]'.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from PIL import Image

MODEL = "hilo_edit_step"


def read_image_and_mask(image_path: str, mask_path: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    image = Image.open(image_path).convert("RGB")
    mask = Image.open(mask_path).convert("L")
    if image.size != (width, height) or mask.size != (width, height):
        sys.exit(f"image is {image.size[0]}x{image.size[1]} and mask {mask.size[0]}x{mask.size[1]}; "
                 f"the engines serve {width}x{height}: resize both first")
    mask = np.asarray(mask)
    if mask.max() == 1:  # a 0/1 mask file: the server reads 0/255
        mask = mask * 255
    return np.asarray(image), mask.astype(np.uint8)


def made_up(name: str, shape: list[int], dtype: np.dtype, n_tokens: int, height: int, width: int, rng) -> np.ndarray:
    """Smoke-test values of the right shape (not a meaningful denoising step)."""
    if name == "img_ids":  # (0, row, col) of each token: the engines gather positions from it
        token = round((height * width / n_tokens) ** 0.5)
        rows, cols = np.divmod(np.arange(n_tokens), width // token)
        return np.stack([np.zeros(n_tokens), rows, cols], 1).astype(dtype)
    if name == "txt_ids":
        return np.zeros(shape, dtype)
    if name in ("timestep", "guidance"):
        return np.full(shape, 0.5 if name == "timestep" else 3.5, dtype)
    return rng.standard_normal(shape).astype(dtype)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="localhost:8000", help="Triton HTTP endpoint")
    parser.add_argument("--image", required=True)
    parser.add_argument("--mask", required=True)
    parser.add_argument("--inputs", help=".npz with the DiT's full-grid inputs (and optionally fill)")
    parser.add_argument("--random", action="store_true", help="make up the full-grid inputs (smoke test)")
    parser.add_argument("--out", help="write the full-grid output here (.npy)")
    parser.add_argument("--check", metavar="ENGINE_FOLDER", help="compare with HiLoRuntime on this built folder")
    args = parser.parse_args(argv)
    if bool(args.inputs) == bool(args.random):
        sys.exit("give the DiT inputs with --inputs FILE.npz, or --random for a smoke test")
    try:  # imported after parsing, so --help works without the serving extra
        import tritonclient.http as httpclient
        from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype
    except ImportError as err:
        sys.exit(f"this client needs tritonclient[http]: pip install 'hilo-export[serving]' ({err})")

    client = httpclient.InferenceServerClient(url=args.url)
    if not client.is_model_ready(MODEL):
        sys.exit(f"{MODEL} is not ready on {args.url}: is tritonserver running with the repository from hilo-export triton?")
    metadata = client.get_model_metadata(MODEL)
    specs = {spec["name"]: spec for spec in metadata["inputs"]}
    height, width = specs["image"]["shape"][:2]
    image, mask = read_image_and_mask(args.image, args.mask, height, width)
    n_tokens = specs["fill"]["shape"][1]

    given = dict(np.load(args.inputs)) if args.inputs else {}
    rng = np.random.default_rng(0)
    arrays = {"image": image, "mask": mask}
    for name, spec in specs.items():
        if name in arrays:
            continue
        dtype = triton_to_np_dtype(spec["datatype"])
        if name in given:
            arrays[name] = np.ascontiguousarray(given[name], dtype=dtype)
        elif name != "fill":  # fill is optional: without it, dropped tokens take the low-frequency prediction
            if not args.random:
                sys.exit(f"{args.inputs} has no {name!r} ({spec['datatype']} {spec['shape']})")
            arrays[name] = made_up(name, spec["shape"], dtype, n_tokens, height, width, rng)

    inputs = []
    for name, array in arrays.items():
        tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    outputs = [httpclient.InferRequestedOutput("output"), httpclient.InferRequestedOutput("bucket")]
    start = time.perf_counter()
    result = client.infer(MODEL, inputs, outputs=outputs)
    seconds = time.perf_counter() - start
    output, bucket = result.as_numpy("output"), int(result.as_numpy("bucket")[0])
    print(f"{MODEL}: bucket index {bucket}, output {list(output.shape)} {output.dtype}, {seconds * 1e3:.1f} ms")
    if args.out:
        np.save(args.out, output)
        print(f"wrote {args.out}")
    if args.check:
        check(args.check, arrays, output, bucket)


def check(folder: str, arrays: dict[str, np.ndarray], output: np.ndarray, bucket: int) -> None:
    from hilo_export.runtime import HiLoRuntime

    runtime = HiLoRuntime.load(folder)
    plan = runtime.plan(arrays["image"], arrays["mask"])
    feeds = {k: v for k, v in arrays.items() if k not in ("image", "mask", "fill")}
    expected = runtime(**feeds, plan=plan, fill=arrays.get("fill")).numpy()
    names = [b["name"] for b in runtime.manifest["buckets"]]
    error = float(np.abs(output - expected).max() / (np.abs(expected).max() or 1.0))
    print(f"HiLoRuntime: bucket {plan.bucket} (server: {names[bucket]}), max relative difference {error:.2e}")
    if names[bucket] != plan.bucket:
        sys.exit("the server planned another bucket than the Python planner")


if __name__ == "__main__":
    main()

"""Write a FLUX.1-Fill-dev-shaped diffusers folder with random weights, never holding the model.

The model is built on the meta device (names, shapes). Each shard's safetensors header is
written first (offsets follow from the shapes), then each tensor is drawn, appended and freed,
so peak memory is one tensor. Shards are cut at ``--shard-gb`` (10 GB like FLUX.1-Fill-dev's)
and named as diffusers' ``save_pretrained`` names them
(``diffusion_pytorch_model-0000i-of-0000n.safetensors`` plus
``diffusion_pytorch_model.safetensors.index.json``).

    python scripts/make_flux_folder.py --out ../runs/flux-fill-4-8 --double 4 --single 8   # ~5 GB bf16
    python scripts/make_flux_folder.py --out ../runs/flux-fill --double 19 --single 38     # ~24 GB bf16, 11.9B

Random weights are scaled like a trained model's (std 0.02, norms at 1) so activations stay finite.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

# FLUX.1-Fill-dev's transformer config (black-forest-labs/FLUX.1-Fill-dev, transformer/config.json)
FILL_CONFIG = dict(
    patch_size=1, in_channels=384, out_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
    axes_dims_rope=[16, 56, 56],
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--double", type=int, default=FILL_CONFIG["num_layers"], help="double-stream blocks (19 in Flux)")
    parser.add_argument("--single", type=int, default=FILL_CONFIG["num_single_layers"], help="single-stream blocks (38)")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    parser.add_argument("--shard-gb", type=float, default=10.0, help="shard size, like save_pretrained(max_shard_size)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from diffusers import FluxTransformer2DModel

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    config = {**FILL_CONFIG, "num_layers": args.double, "num_single_layers": args.single}
    with torch.device("meta"):
        model = FluxTransformer2DModel(**config)
    folder = args.out / "transformer"
    folder.mkdir(parents=True, exist_ok=True)
    model.save_config(folder)  # config.json with _class_name and _diffusers_version
    (args.out / "model_index.json").write_text(json.dumps({"_class_name": "FluxFillPipeline",
                                                           "transformer": ["diffusers", "FluxTransformer2DModel"]}, indent=2))

    shapes = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    limit = int(args.shard_gb * 1e9)
    groups: list[list[str]] = [[]]
    size = 0
    for key, shape in shapes.items():
        nbytes = math.prod(shape) * dtype.itemsize
        if groups[-1] and size + nbytes > limit:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += nbytes
    total = sum(math.prod(s) for s in shapes.values())
    print(f"{folder}: {total / 1e9:.2f}B parameters, {total * dtype.itemsize / 1e9:.2f} GB {args.dtype} "
          f"in {len(groups)} shard(s)", file=sys.stderr)

    generator = torch.Generator().manual_seed(args.seed)
    weight_map = {}
    for i, keys in enumerate(groups, 1):
        name = f"diffusion_pytorch_model-{i:05d}-of-{len(groups):05d}.safetensors"
        _write_shard(folder / name, keys, shapes, dtype, generator)
        weight_map.update({key: name for key in keys})
        print(f"  wrote {name}", file=sys.stderr)
    index = {"metadata": {"total_size": total * dtype.itemsize}, "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return 0


SAFETENSORS_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


def _write_shard(path: Path, keys: list[str], shapes: dict, dtype: torch.dtype, generator: torch.Generator) -> None:
    """A safetensors file (8-byte header length, JSON header, raw little-endian data), one tensor at a time."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key in keys:
        nbytes = math.prod(shapes[key]) * dtype.itemsize
        header[key] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shapes[key]), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for key in keys:
            tensor = _random(key, shapes[key], dtype, generator)
            f.write(memoryview(tensor.view(-1).view(torch.uint8).numpy()))
            del tensor
    tmp.replace(path)


def _random(key: str, shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    if "norm" in key and key.endswith("weight") and len(shape) == 1:
        return torch.ones(shape, dtype=dtype)  # norm scales
    if key.endswith("bias"):
        return torch.zeros(shape, dtype=dtype)
    return (torch.randn(shape, generator=generator) * 0.02).to(dtype)


if __name__ == "__main__":
    raise SystemExit(main())

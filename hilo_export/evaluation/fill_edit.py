"""``hilo-export edit --model FOLDER``: one edit with a saved diffusers ``FluxFillPipeline`` on HiLo engines.

Everything the user passed is checked (image, mask, pipeline folder, engines) before an engine
is built or a model is loaded. An image of another size than the engines' is resized to theirs
as the pipeline resizes it (and the edit says so). The pipeline plans the edit from its own inputs under ``apply``;
the output is composited with the input outside the mask, bit for bit, as the reference edit is.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..export import BuildRequest, build
from ..model.loading import ModelError, accelerate_available, model_folder, quiet_loading
from ..reference.pipeline import EditResult
from ..runtime.pipeline import apply
from ..runtime.runtime import HiLoRuntime
from .edit import EditError, EditOutcome
from .edit_set import resize_like_pipeline

log = logging.getLogger(__name__)

FILL_PIPELINE = "FluxFillPipeline"


def fill_token_size(folder: Path) -> int:
    """Pixels per token of a saved Fill pipeline: VAE factor (from its block count) x Flux's 2 x 2 packing."""
    index = folder / "model_index.json"
    if not index.exists():
        raise EditError(f"{folder} is not a saved diffusers pipeline (no model_index.json); save it with pipe.save_pretrained")
    name = json.loads(index.read_text()).get("_class_name")
    if name != FILL_PIPELINE:
        raise EditError(f"{folder} holds a {name}; edit --model runs a {FILL_PIPELINE} (or the built-in reference model)")
    vae_config = folder / "vae" / "config.json"
    if not vae_config.exists():
        raise EditError(f"{folder} has no vae/config.json; the pipeline folder is incomplete")
    blocks = len(json.loads(vae_config.read_text())["block_out_channels"])
    return 2 ** (blocks - 1) * 2


def check_fill_edit(model: str, image: np.ndarray, mask: np.ndarray, engines: Path | None
                    ) -> tuple[Path, int, HiLoRuntime | None, tuple[int, int]]:
    """The pipeline folder, its token size, the loaded engines (if given) and the size the edit runs at,
    after checking every argument. Without engines the size is the image's, rounded down to whole
    tokens, as the pipeline itself rounds it; with engines it is theirs."""
    folder = model_folder(model)
    token = fill_token_size(folder)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise EditError(f"image must be uint8 [H, W, 3] RGB; got {image.dtype} {list(image.shape)}")
    if mask.shape != image.shape[:2]:
        raise EditError(f"mask is {list(mask.shape)} but the image is {list(image.shape[:2])}: give a mask of the image's size")
    height, width = image.shape[:2]
    size = (width // token * token, height // token * token)
    if not all(size):
        raise EditError(f"image is {width}x{height}; this pipeline needs at least {token} px per side")
    runtime = None
    if engines is not None:
        runtime = HiLoRuntime.load(engines)
        check_engines(runtime, folder, model, engines)
        size = tuple(runtime.resolution)
    return folder, token, runtime, size


def check_engines(runtime: HiLoRuntime, folder: Path, model: str, engines: Path) -> None:
    """Refuse engines built from another transformer than ``folder``'s, or for another token size."""
    built = runtime.manifest["model"]
    stock = json.loads((folder / "transformer" / "config.json").read_text())
    width, height = runtime.resolution
    if any(built["config"].get(key) != value for key, value in stock.items() if key in built["config"]):
        raise EditError(f"the engines in {engines} are of {built['name']}, not of {folder}'s transformer: "
                        f"build them with hilo-export build --model {model} --resolution {width}x{height}")
    token = fill_token_size(folder)
    if runtime.token_size != token:
        raise EditError(f"the engines in {engines} use {runtime.token_size}-px tokens; this pipeline's are {token} px: "
                        f"build them with hilo-export build --model {model} --resolution {width}x{height}")


def fill_engines(model: str, size: tuple[int, int], token: int, out_dir: Path | None = None,
                 engines_root: Path = Path("engines"), text_len: int | None = None, backend: str = "ort",
                 progress: Callable[[str], None] = log.info) -> Path:
    """Build (or reuse, when up to date) the engines of a Fill pipeline's transformer for ``size``."""
    width, height = size
    slug = Path(model).name if Path(model).expanduser().exists() else model.replace("/", "--")
    return build(BuildRequest(model, resolution=size, token_size=token, text_len=text_len, backend=backend,
                              out_dir=out_dir or engines_root / f"{slug}-{width}x{height}"), progress=progress)


def run_fill_edit(model: str, image: np.ndarray, mask: np.ndarray, prompt: str, engines: Path | None = None,
                  steps: int = 8, seed: int = 0, compare: bool = False, guidance_scale: float = 30.0,
                  engines_root: Path = Path("engines"), progress: Callable[[str], None] = log.info) -> EditOutcome:
    if steps < 1:
        raise EditError(f"steps must be at least 1, got {steps}")
    folder, token, runtime, size = check_fill_edit(model, image, mask, engines)
    if runtime is None:
        engines = fill_engines(model, size, token, engines_root=engines_root, progress=progress)
        runtime = HiLoRuntime.load(engines)
    if (image.shape[1], image.shape[0]) != size:
        progress(f"resized the {image.shape[1]}x{image.shape[0]} image and its mask to {size[0]}x{size[1]}, the engines' "
                 "size, as the pipeline does (Lanczos; the mask binarized at 0.5)")
        image, mask = resize_like_pipeline(image, mask, size)
    pipe = load_fill_pipeline(folder)
    with apply(pipe, runtime, composite=True) as handle:
        hilo = _edit(pipe, handle, image, mask, prompt, steps, seed, guidance_scale, runtime.manifest["text_len"])
        dense = None
        if compare:
            handle.dense = True
            dense = _edit(pipe, handle, image, mask, prompt, steps, seed, guidance_scale, runtime.manifest["text_len"])
    return EditOutcome(hilo, dense, Path(engines), image, mask)


def load_fill_pipeline(folder: Path, transformer_weights: bool = False) -> Any:
    """The saved pipeline in float32. Without ``transformer_weights`` its transformer is built on the meta
    device (config only): under ``apply`` the engines replace it, so its weights (48 GB for FLUX.1-Fill in
    float32) are never read."""
    import torch
    from diffusers import FluxFillPipeline, FluxTransformer2DModel

    try:
        parts = {}
        if not transformer_weights:
            with torch.device("meta"):
                parts["transformer"] = FluxTransformer2DModel.from_config(
                    FluxTransformer2DModel.load_config(folder / "transformer"))
        with quiet_loading():
            pipe = FluxFillPipeline.from_pretrained(folder, dtype=torch.float32, low_cpu_mem_usage=accelerate_available(),
                                                    **parts)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"cannot load the pipeline in {folder}: {str(err).splitlines()[0]}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _edit(pipe: Any, handle: Any, image: np.ndarray, mask: np.ndarray, prompt: str, steps: int, seed: int,
          guidance_scale: float, text_len: int) -> EditResult:
    import torch
    from PIL import Image

    step_seconds: list[float] = []
    started: list[float] = []
    hooks = [handle.transformer.register_forward_pre_hook(lambda *_: started.append(time.perf_counter())),
             handle.transformer.register_forward_hook(lambda *_: step_seconds.append(time.perf_counter() - started[-1]))]
    start = time.perf_counter()
    try:
        out = pipe(prompt=prompt, image=Image.fromarray(image), mask_image=Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)),
                   height=image.shape[0], width=image.shape[1], num_inference_steps=steps, guidance_scale=guidance_scale,
                   max_sequence_length=text_len, generator=torch.Generator().manual_seed(seed), output_type="np").images[0]
    finally:
        for hook in hooks:
            hook.remove()
    edited = (out * 255).round().astype(np.uint8)  # as diffusers' numpy_to_pil rounds
    return EditResult(edited, step_seconds, time.perf_counter() - start, handle.plan)

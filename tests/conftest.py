"""Tiny diffusers models built from configs (nothing is downloaded) and inputs for them."""

from __future__ import annotations

import json
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

TOKEN = 8  # pixels per token in these tests: small images, real grids


def tiny_flux(in_channels: int = 8, out_channels: int | None = None, guidance: bool = False, seed: int = 0):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=in_channels,
        out_channels=out_channels,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=24,
        guidance_embeds=guidance,
        axes_dims_rope=(4, 6, 6),
    ).eval()


def grid_ids(h: int, w: int) -> torch.Tensor:
    """Flux img_ids for an h x w token grid: (0, row, col), row-major."""
    from hilo_export.reference.model import grid_ids as ids_for_grid

    return ids_for_grid((h, w))


def built_step_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    """One denoising step's full-grid inputs for the ``built`` tiny-flux engines (batch 1, 8 text tokens)."""
    h, w = BUILD_RESOLUTION[1] // 16, BUILD_RESOLUTION[0] // 16
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, h * w, 16, generator=g),
        "encoder_hidden_states": torch.randn(1, 8, 32, generator=g),
        "pooled_projections": torch.randn(1, 32, generator=g),
        "timestep": torch.rand(1, generator=g),
        "img_ids": grid_ids(h, w),
        "txt_ids": torch.zeros(8, 3),
        "guidance": torch.full((1,), 3.5),
    }


def flux_inputs(model, h: int, w: int, batch: int = 2, text: int = 7, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    inputs = {
        "hidden_states": torch.randn(batch, h * w, cfg.in_channels, generator=g),
        "encoder_hidden_states": torch.randn(batch, text, cfg.joint_attention_dim, generator=g),
        "pooled_projections": torch.randn(batch, cfg.pooled_projection_dim, generator=g),
        "timestep": torch.rand(batch, generator=g),
        "img_ids": grid_ids(h, w),
        "txt_ids": torch.zeros(text, 3),
    }
    if cfg.guidance_embeds:
        inputs["guidance"] = torch.full((batch,), 3.5)
    return inputs


def textured_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 RGB: a smooth gradient with a noisy textured patch (high frequency) in one corner."""
    rng = np.random.default_rng(seed)
    height, width = h * TOKEN, w * TOKEN
    y, x = np.mgrid[0:height, 0:width]
    base = (x / width * 200 + y / height * 40).astype(np.uint8)
    image = np.stack([base, base, base], axis=-1)
    image[: height // 2, : width // 2] = rng.integers(0, 256, (height // 2, width // 2, 3), dtype=np.uint8)
    return image


@pytest.fixture(scope="session")
def flux_model():
    return tiny_flux()


# A built engine folder shared by the build, runtime and CLI tests (one export of each graph).
BUILD_RESOLUTION = (320, 192)  # 20 x 12 tokens of 16 px: two low-frequency blocks, one partial
# the `built` engines' planner: padded (one static length per bucket), whatever the default
BUILT_PLANNER = {"sizing": "padded"}


@pytest.fixture(scope="session")
def engines_root(tmp_path_factory):
    """One folder of builds named like ``hilo-export`` names them, so later builds of the same thing are cache hits."""
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="session")
def built(engines_root):
    """Engines planned with padded sizing (one static length per bucket), whatever the default; in a
    folder of their own, so that a build with the default settings (the quick bench's) never replaces them."""
    from hilo_export.export import BuildRequest, build
    from hilo_export.planning import PlannerConfig

    folder = engines_root / "tiny-flux-{}x{}-padded".format(*BUILD_RESOLUTION)
    build(BuildRequest("tiny-flux", resolution=BUILD_RESOLUTION, out_dir=folder, config=PlannerConfig(**BUILT_PLANNER)),
          progress=lambda _: None)
    return folder


@pytest.fixture(scope="session")
def built_exact(engines_root):
    """The same engines planned with exact sizing (each plan at its own length), in a folder of its own."""
    from hilo_export.export import BuildRequest, build
    from hilo_export.planning import PlannerConfig

    folder = engines_root / "tiny-flux-{}x{}-exact".format(*BUILD_RESOLUTION)
    build(BuildRequest("tiny-flux", resolution=BUILD_RESOLUTION, out_dir=folder, config=PlannerConfig(sizing="exact")),
          progress=lambda _: None)
    return folder


@pytest.fixture
def built_copy(built, tmp_path):
    """A private copy of the built folder, for tests that change or break it."""
    import shutil

    return Path(shutil.copytree(built, tmp_path / "engines"))


# The reference model's engines for small edits (16 x 16 tokens of 8 px), as bench --quick uses them.
EDIT_SIZE = 128


@pytest.fixture(scope="session")
def reference_built(engines_root):
    from hilo_export.evaluation.edit import reference_engines

    return reference_engines((EDIT_SIZE, EDIT_SIZE), engines_root, progress=lambda _: None)


def edit_inputs(size: int = EDIT_SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A held-out photo at size x size and a blob mask (bool) over about a tenth of it."""
    from hilo_export.evaluation.settings import eval_image

    image = eval_image("coffee", (size, size))
    y, x = np.mgrid[0:size, 0:size]
    rng = np.random.default_rng(seed)
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    return image, (y - cy) ** 2 + (x - cx) ** 2 < (0.18 * size) ** 2


# A saved tiny FluxFillPipeline (sharded transformer weights) and its engines, built once by the CLI.
FILL_SIZE = 128  # 8 x 8 tokens of 16 px
FILL_TEXT_LEN = 8


@pytest.fixture(scope="session")
def fill_folder(tmp_path_factory):
    from hilo_export.model.tiny_fill import save_tiny_fill_pipeline

    return save_tiny_fill_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny-fill")


@pytest.fixture(scope="session")
def fill_built(fill_folder, engines_root):
    from click.testing import CliRunner

    from hilo_export.cli import main

    out = engines_root / f"tiny-fill-{FILL_SIZE}x{FILL_SIZE}"
    args = ["build", "--model", str(fill_folder), "--resolution", f"{FILL_SIZE}x{FILL_SIZE}",
            "--text-len", str(FILL_TEXT_LEN), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out


def fill_inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB at FILL_SIZE with texture in one corner, and a small square mask (uint8, 255 = edit)."""
    image = textured_image(FILL_SIZE // TOKEN, FILL_SIZE // TOKEN, seed)
    mask = np.zeros((FILL_SIZE, FILL_SIZE), np.uint8)
    mask[72:96, 80:104] = 255
    return image, mask


def resign(folder: Path, change=None) -> dict:
    """Re-sign a folder as anyone can: every file entry's sha256 and size recomputed from the files as
    they are now, ``change(data)`` applied to the manifest, its digest recomputed. Returns the data."""
    from hilo_export.folder.manifest import DIGEST, read_manifest, sha256_file, write_manifest

    manifest = json.loads((Path(folder) / "manifest.json").read_text()) if change is None else read_manifest(folder)
    data = {k: v for k, v in manifest.items() if k != DIGEST}
    if change is not None:
        change(data)

    def fix(entries):
        for entry in entries:
            path = Path(folder) / entry["path"]
            if path.is_file():
                entry.update(sha256=sha256_file(path), bytes=path.stat().st_size)
    for graph in data["graphs"].values():
        fix(graph["files"])
        fix(graph["engine"]["files"])
    for bucket in data["buckets"]:
        fix(bucket["files"])
    fix(data.get("planner_model", {}).get("files", []))
    fix(data["weights"]["files"])
    write_manifest(folder, data)
    return data


@contextmanager
def deadline(seconds=20):
    """Turn a hang (a fifo opened for reading blocks until a writer comes) into a failure."""
    def hung(*_):
        raise TimeoutError(f"still running after {seconds} s: it hangs")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

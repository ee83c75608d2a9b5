"""diffusers' FluxFillPipeline on HiLo: a tiny random pipeline saved, built and run under ``apply``."""

import json

import numpy as np
import pytest
import torch
from conftest import FILL_SIZE, FILL_TEXT_LEN, fill_inputs
from PIL import Image

import hilo_export
from hilo_export.model.loading import load_model, model_folder
from hilo_export.planning import PlannerConfig, plan_tokens
from hilo_export.runtime import FillPlanningError, HiLoRuntime, PlannedTransformer, RuntimeInputError


@pytest.fixture(scope="module")
def pipe(fill_folder):
    from diffusers import FluxFillPipeline

    pipe = FluxFillPipeline.from_pretrained(fill_folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def runtime(fill_built):
    return HiLoRuntime.load(fill_built)


def run(pipe, image, mask, seed=0, steps=3, **kwargs):
    kwargs = {"prompt": "a red cup on the table", "height": FILL_SIZE, "width": FILL_SIZE, "output_type": "np", **kwargs}
    return pipe(image=Image.fromarray(image), mask_image=Image.fromarray(mask), num_inference_steps=steps,
                max_sequence_length=FILL_TEXT_LEN, generator=torch.Generator().manual_seed(seed), **kwargs).images


def torch_hilo(pipe, runtime):
    return PlannedTransformer(pipe.transformer, runtime.token_size, runtime.manifest["buckets_spec"], runtime.config)


def test_the_saved_folder_has_sharded_weights_and_builds(fill_folder, fill_built, pipe):
    index = json.loads((fill_folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    loaded = load_model(str(fill_folder))
    assert loaded.source == "folder"
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(), pipe.transformer.state_dict().values()))
    manifest = json.loads((fill_built / "manifest.json").read_text())
    assert manifest["model"]["config"]["in_channels"] == 16 + 16 + 256 and manifest["token_size"] == 16


def test_a_pipeline_in_the_hub_cache_loads_with_the_same_layout(fill_folder, tmp_path, monkeypatch):
    import shutil

    from huggingface_hub import constants

    repo = tmp_path / "models--hilo--tiny-fill"
    revision = "0" * 40
    shutil.copytree(fill_folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert model_folder("hilo/tiny-fill") == repo / "snapshots" / revision
    cached = load_model("hilo/tiny-fill")
    assert cached.source == "cache" and cached.weights_sha256 == load_model(str(fill_folder)).weights_sha256


@pytest.mark.parametrize("kind", ["engines", "torch"])
def test_a_full_mask_equals_the_stock_pipeline(pipe, runtime, kind):
    image, _ = fill_inputs()
    full = np.full((FILL_SIZE, FILL_SIZE), 255, np.uint8)
    stock = run(pipe, image, full, guidance_scale=10.0)
    with hilo_export.apply(pipe, runtime if kind == "engines" else torch_hilo(pipe, runtime)) as h:
        hilo = run(pipe, image, full, guidance_scale=10.0)
    assert h.plan.bucket == "full"
    # float tolerance: ORT against torch kernels; HiLoTransformer gathers every token and scatters it back
    assert np.abs(hilo - stock).max() <= 1e-4


def test_the_plan_comes_from_the_pipelines_own_resized_inputs(pipe, runtime):
    image, mask = fill_inputs()
    small = Image.fromarray(image).resize((96, 96))  # the pipeline resizes to height x width itself
    small_mask = Image.fromarray(mask).resize((96, 96))
    with hilo_export.apply(pipe, runtime) as h:
        pipe(prompt="a cup", image=small, mask_image=small_mask, height=FILL_SIZE, width=FILL_SIZE, num_inference_steps=1,
             max_sequence_length=FILL_TEXT_LEN, output_type="latent")
    pixels = pipe.image_processor.preprocess(small, height=FILL_SIZE, width=FILL_SIZE)[0]
    processed = ((pixels / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    edit = pipe.mask_processor.preprocess(small_mask, height=FILL_SIZE, width=FILL_SIZE)[0, 0].numpy() > 0.5
    expected = plan_tokens(processed, edit, 16, runtime.manifest["buckets_spec"], runtime.config)
    assert h.plan.bucket not in ("full",) and h.plan.same_selection(expected)


def test_dropped_tokens_land_on_the_known_image(pipe, runtime):
    image, mask = fill_inputs()
    with hilo_export.apply(pipe, runtime) as h:
        latents = run(pipe, image, mask, output_type="latent")
        known = h.transformer.known.clone()
    dropped = torch.ones(h.plan.n_tokens, dtype=torch.bool)
    dropped[h.plan.keep_indices] = False
    assert dropped.any() and not dropped.all()
    assert (latents[:, dropped] - known[:, dropped]).abs().max() < 1e-5
    # the known latents are the pipeline's own encoding of the input (not of the masked image)
    pixels = pipe.image_processor.preprocess(Image.fromarray(image), height=FILL_SIZE, width=FILL_SIZE)
    mean = (pipe.vae.encode(pixels).latent_dist.mean - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
    packed = pipe._pack_latents(mean, 1, mean.shape[1], mean.shape[2], mean.shape[3])
    std = pipe.vae.encode(pixels).latent_dist.std * pipe.vae.config.scaling_factor
    assert ((known - packed).abs() <= 6 * pipe._pack_latents(std, 1, *std.shape[1:]) + 1e-6).all()
    # with latents= the pipeline skips its encoding of the input; HiLo encodes it once itself
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(3))
    with hilo_export.apply(pipe, runtime) as h:
        given = run(pipe, image, mask, output_type="latent", latents=noise)
        assert h.transformer.known is not None
        assert (given[:, dropped] - h.transformer.known[:, dropped]).abs().max() < 1e-5
    # the low-frequency fill lets them drift: the known-image velocity is what holds them
    with hilo_export.apply(pipe, runtime, fill="lowfreq"):
        drifting = run(pipe, image, mask, output_type="latent")
    assert (drifting[:, dropped] - known[:, dropped]).abs().max() > 1e-2


def test_composite_keeps_the_input_bit_for_bit_and_exit_restores_the_pipeline(pipe, runtime):
    image, mask = fill_inputs()
    stock_transformer, before = pipe.transformer, dict(vars(pipe))
    processor_before = dict(vars(pipe.image_processor))
    config_before = dict(pipe.config)
    with hilo_export.apply(pipe, runtime, composite=True):
        pil = run(pipe, image, mask, output_type="pil")[0]
        array = run(pipe, image, mask)[0]
    outside = mask == 0
    assert np.array_equal(np.asarray(pil)[outside], image[outside])
    assert np.array_equal((array * 255).round().astype(np.uint8)[outside], image[outside])
    assert not np.array_equal(np.asarray(pil)[~outside], image[~outside])  # the hole was generated
    assert pipe.transformer is stock_transformer and dict(pipe.config) == config_before
    assert vars(pipe).keys() == before.keys() and all(vars(pipe)[k] is before[k] for k in before if k != "_internal_dict")
    assert vars(pipe.image_processor) == processor_before


def test_batches_share_one_plan_and_match_torch(pipe, runtime):
    image, mask = fill_inputs()
    kwargs = {"prompt": ["a red cup", "a blue dog"], "num_images_per_prompt": 2, "guidance_scale": 5.0}
    with hilo_export.apply(pipe, torch_hilo(pipe, runtime)):
        reference = run(pipe, image, mask, **kwargs)
    with hilo_export.apply(pipe, runtime) as h:  # engines built for batch 1: four engine calls a step
        engines = run(pipe, image, mask, **kwargs)
        single = run(pipe, image, mask)
    assert engines.shape == (4, FILL_SIZE, FILL_SIZE, 3) and h.plan.bucket != "full"
    assert np.abs(engines - reference).max() < 1e-3
    assert np.abs(engines[0] - engines[2]).max() > 1e-3  # the prompts are used
    assert single.shape[0] == 1


def test_calls_hilo_cannot_plan_are_clear_errors(pipe, runtime):
    image, mask = fill_inputs()
    full = np.full_like(mask, 255)
    with hilo_export.apply(pipe, runtime):
        with pytest.raises(FillPlanningError, match="differ; HiLo plans one edit per call"):
            pipe(prompt=["a", "b"], image=Image.fromarray(image), mask_image=[Image.fromarray(mask), Image.fromarray(full)],
                 height=FILL_SIZE, width=FILL_SIZE, num_inference_steps=1, max_sequence_length=FILL_TEXT_LEN)
        with pytest.raises(FillPlanningError, match=f"width={FILL_SIZE}, height={FILL_SIZE}"):
            run(pipe, image, mask, height=64, width=64)
        with pytest.raises(RuntimeInputError, match=f"max_sequence_length={FILL_TEXT_LEN}"):
            pipe(prompt="a cup", image=Image.fromarray(image), mask_image=Image.fromarray(mask), height=FILL_SIZE,
                 width=FILL_SIZE, num_inference_steps=1, max_sequence_length=2 * FILL_TEXT_LEN)
    assert type(pipe.transformer).__name__ == "FluxTransformer2DModel"
    with pytest.raises(FillPlanningError, match="--token-size 16"):
        hilo_export.apply(pipe, PlannedTransformer(pipe.transformer, 8, "s", PlannerConfig()))
    assert "prepare_latents" not in vars(pipe)  # a refused apply changes nothing


def test_edit_command_runs_a_fill_pipeline_folder(fill_folder, fill_built, tmp_path):
    from click.testing import CliRunner

    from hilo_export.cli import main

    image, mask = fill_inputs()
    Image.fromarray(image).save(tmp_path / "in.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    common = ["edit", "--model", str(fill_folder), "--engines", str(fill_built), "--image", str(tmp_path / "in.png"),
              "--mask", str(tmp_path / "mask.png"), "--steps", "2"]
    out = tmp_path / "out" / "edit.png"
    result = CliRunner().invoke(main, [*common, "--prompt", "a red cup", "--compare", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "ignored" not in result.output and "in-mask PSNR HiLo vs dense" in result.output
    edited = np.asarray(Image.open(out))
    assert np.array_equal(edited[mask == 0], image[mask == 0])
    # six panels; the selection map's legend may make the picture wider and taller
    width, height = Image.open(tmp_path / "out" / "edit.compare.png").size
    assert width >= 6 * FILL_SIZE and height > FILL_SIZE
    assert (tmp_path / "out" / "edit.dense.png").exists()
    other = tmp_path / "other.png"
    result = CliRunner().invoke(main, [*common, "--prompt", "a blue dog", "--out", str(other)])
    assert result.exit_code == 0, result.output
    assert not np.array_equal(np.asarray(Image.open(other)), edited)  # the prompt is used


def test_edit_command_resizes_an_image_of_another_size_as_the_pipeline_does(fill_folder, fill_built, tmp_path):
    from click.testing import CliRunner

    from hilo_export.cli import main

    image, mask = fill_inputs()
    Image.fromarray(image).resize((200, 150), Image.LANCZOS).save(tmp_path / "in.png")
    Image.fromarray(mask).resize((200, 150), Image.NEAREST).save(tmp_path / "mask.png")
    out = tmp_path / "edit.png"
    result = CliRunner().invoke(main, ["edit", "--model", str(fill_folder), "--engines", str(fill_built), "--image",
                                       str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"), "--steps", "1",
                                       "--compare", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"resized the 200x150 image and its mask to {FILL_SIZE}x{FILL_SIZE}" in result.output
    assert Image.open(out).size == (FILL_SIZE, FILL_SIZE) and "in-mask PSNR HiLo vs dense" in result.output


def test_edit_command_checks_every_argument_before_a_build(fill_folder, built, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from hilo_export.cli import main

    monkeypatch.chdir(tmp_path)
    image, mask = fill_inputs()
    Image.fromarray(image[:120, :120]).save("odd.png")
    Image.fromarray(mask[:120, :120]).save("odd-mask.png")
    Image.fromarray(image).save("in.png")
    Image.fromarray(mask).save("mask.png")

    def edit(*args):
        return CliRunner().invoke(main, ["edit", "--out", "never.png", *args])

    result = edit("--model", str(fill_folder), "--image", "odd.png", "--mask", "in.png")
    assert result.exit_code == 2 and "give a mask of the image's size" in result.output
    result = edit("--model", str(fill_folder), "--engines", str(built), "--image", "in.png", "--mask", "mask.png")
    assert result.exit_code == 2 and f"not of {fill_folder}" in result.output
    result = edit("--model", str(fill_folder / "transformer"), "--image", "in.png", "--mask", "mask.png")
    assert result.exit_code == 2 and "no model_index.json" in result.output
    result = edit("--model", "someone/not-cached", "--image", "in.png", "--mask", "mask.png")
    assert result.exit_code == 2 and "not a built-in" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "mask.png", "odd-mask.png", "odd.png"]

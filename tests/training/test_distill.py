"""``hilo-export distill`` end to end on the reference model and a tiny FluxFillPipeline folder (a few steps)."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import FILL_TEXT_LEN, tiny_flux
from PIL import Image

from hilo_export.cli import main
from hilo_export.cli_distill import distill as distill_command
from hilo_export.evaluation.masks import sample_mask
from hilo_export.export import BuildRequest, build
from hilo_export.model.loading import load_model, load_reference
from hilo_export.model.lowfreq import LOWFREQ_FILE, PREFIX, has_lowfreq
from hilo_export.planning import PlannerConfig
from hilo_export.reference.model import DECODER_FILE, load_checkpoint
from hilo_export.reference.procedural import procedural_image
from hilo_export.training import DistillRequest, TrainError, distill
from hilo_export.training.distill import CHECKPOINT, SCHEDULES, learning_rate

FILL_RESOLUTION = 128  # 8 x 8 tokens of 16 px


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(procedural_image(160, rng)).save(folder / f"{i}.png")
    return folder


def fill_request(fill_folder, images, out, **kwargs):
    settings = dict(model=str(fill_folder), images=images, out=out, steps=3, batch=2, resolution=FILL_RESOLUTION,
                    lora_rank=2, lr=1e-3, text_len=FILL_TEXT_LEN, checkpoint_every=1, log_every=1,
                    config=PlannerConfig(lowfreq_factor=4))
    settings.update(kwargs)
    return DistillRequest(**settings)


def test_the_reference_model_distills_from_the_command_line(images, tmp_path):
    out = tmp_path / "reference-hilo"
    args = ["distill", "--model", "reference", "--images", str(images), "--steps", "2", "--batch", "1",
            "--resolution", "128", "--lora-rank", "2", "--lowfreq-factor", "4", "--context", "ring",
            "--lr-schedule", "constant", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(out)
    report = json.loads((out / "distill.json").read_text())
    assert [r["step"] for r in report["history"] if r["kind"] != "validation"] == [1, 2]
    assert [r["step"] for r in report["history"] if r["kind"] == "validation"] == [0, 2]  # the start and the end
    assert report["model"]["kind"] == "reference" and report["loss"]["validation"][0][1] > 0
    assert report["settings"]["config"]["context"] == "ring" and report["settings"]["schedule"] == "constant"
    assert report["sigmas"][0] == 1.0 and len(report["sigmas"]) == 8 and report["wall_seconds"] > 0
    assert (out / "loss.png").stat().st_size > 0 and (out / DECODER_FILE).exists()
    model = load_reference(out)  # the reference pipeline's loader takes the folder, embedding and all
    assert has_lowfreq(model) and model.x_embedder.lowfreq_delta.weight.abs().sum() > 0


def test_a_fill_pipeline_distills_builds_and_its_engines_carry_the_embedding(fill_folder, images, tmp_path):
    result = distill(fill_request(fill_folder, images, tmp_path / "tiny-fill-hilo"), masks=sample_mask)
    out = result.folder
    assert (out / "model_index.json").exists() and (out / "vae").is_dir() and (out / "transformer" / LOWFREQ_FILE).exists()
    assert [r["kind"] for r in result.history] and all(np.isfinite(r["loss"]) for r in result.history)
    loaded = load_model(str(out)).model
    assert has_lowfreq(loaded)
    stock = load_model(str(fill_folder)).model
    # the adapters were merged: the block weights moved, the embedders were not trained
    assert not torch.equal(loaded.single_transformer_blocks[0].attn.to_q.weight, stock.single_transformer_blocks[0].attn.to_q.weight)
    assert torch.equal(loaded.x_embedder.weight, stock.x_embedder.weight)
    # build checks every exported graph against the eager model (loaded with its embedding) before it writes
    # them; a large learned difference makes that check fail unless the engines carry the embedding
    from safetensors.torch import load_file, save_file

    path = out / "transformer" / LOWFREQ_FILE
    g = torch.Generator().manual_seed(0)
    save_file({k: torch.randn(v.shape, generator=g) for k, v in load_file(path).items()}, str(path))
    embed = load_model(str(out)).model.x_embedder
    x = torch.randn(1, 5, embed.in_features, generator=g)
    plain = embed(x)  # no low-frequency tokens: the stock embedding
    embed.n_lowfreq = 2
    assert (embed(x) - plain)[:, :2].abs().min() > 1e-3 and torch.equal(embed(x)[:, 2:], plain[:, 2:])
    engines = build(BuildRequest(str(out), resolution=(FILL_RESOLUTION, FILL_RESOLUTION), text_len=FILL_TEXT_LEN,
                                 out_dir=tmp_path / "engines", config=fill_request(fill_folder, images, out).config),
                    progress=lambda _: None)
    manifest = json.loads((engines / "manifest.json").read_text())
    onnx_file = next(f["path"] for f in manifest["graphs"]["hilo"]["files"] if f["path"].endswith(".onnx"))
    graph = onnx.load(engines / onnx_file, load_external_data=False)
    names = {i.name for i in graph.graph.initializer}
    assert any(n.endswith(PREFIX + "weight") for n in names)


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(fill_folder, images, tmp_path):
    whole = distill(fill_request(fill_folder, images, tmp_path / "whole"), masks=sample_mask)
    distill(fill_request(fill_folder, images, tmp_path / "parts", steps=2), masks=sample_mask)
    resumed = distill(fill_request(fill_folder, images, tmp_path / "parts", resume=True), masks=sample_mask)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history]
    a = load_checkpoint(tmp_path / "whole" / CHECKPOINT)["trained"]
    b = load_checkpoint(tmp_path / "parts" / CHECKPOINT)["trained"]
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(TrainError, match="other settings.*lr"):
        distill(fill_request(fill_folder, images, tmp_path / "parts", steps=4, lr=5e-4, resume=True), masks=sample_mask)
    # a run folder moved elsewhere resumes (here: at its last step, which only writes the model again)
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "parts", moved)
    again = distill(fill_request(fill_folder, images, moved, resume=True), masks=sample_mask)
    assert [r["loss"] for r in again.history] == [r["loss"] for r in whole.history]


def test_the_learning_rate_warms_up_then_decays_to_zero_or_stays():
    request = DistillRequest(images=Path("."), out=Path("."), steps=120, lr=1e-3, warmup=20)
    rates = [learning_rate(request, step) for step in range(request.steps)]
    assert rates[0] == pytest.approx(1e-3 / 20) and rates[19] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[19:], rates[20:]))  # never rises after the warm-up
    assert rates[69] == pytest.approx(0.5e-3, rel=0.05) and rates[-1] < 1e-6
    constant = replace(request, schedule="constant")
    assert [learning_rate(constant, step) for step in (0, 19, 119)] == pytest.approx([1e-3 / 20, 1e-3, 1e-3])
    with pytest.raises(TrainError, match="--lr-schedule must be one of cosine, constant"):
        replace(request, schedule="step")
    # the command line offers what the request takes (it lists them itself: importing training costs seconds)
    option = next(p for p in distill_command.params if p.name == "lr_schedule")
    assert tuple(option.type.choices) == SCHEDULES


def test_bad_inputs_get_one_clear_error(fill_folder, images, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrainError, match="no images in"):
        distill(fill_request(fill_folder, empty, tmp_path / "a"), masks=sample_mask)
    with pytest.raises(TrainError, match="multiple of the model's 16-px tokens"):
        distill(fill_request(fill_folder, images, tmp_path / "b", resolution=120), masks=sample_mask)
    bare = tmp_path / "bare"
    tiny_flux().save_pretrained(bare)
    with pytest.raises(TrainError, match="pass the pipeline folder"):
        distill(fill_request(bare, images, tmp_path / "c"), masks=sample_mask)
    with pytest.raises(TrainError, match="--lr must be positive"):
        fill_request(fill_folder, images, tmp_path / "d", lr=0.0)
    result = CliRunner().invoke(main, ["distill", "--images", str(empty), "--out", str(tmp_path / "e"), "--steps", "1"])
    assert result.exit_code == 2 and "no images in" in result.output

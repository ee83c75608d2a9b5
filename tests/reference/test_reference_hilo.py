"""The shipped HiLo-distilled reference model: ``--model reference-hilo`` wherever ``--model reference`` works."""

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import EDIT_SIZE, edit_inputs
from PIL import Image

from hilo_export.cli import main
from hilo_export.evaluation.edit import reference_engines
from hilo_export.evaluation.settings import BenchError, BenchSettings
from hilo_export.model import (
    REFERENCE,
    REFERENCE_HILO,
    REFERENCE_MODELS,
    ModelError,
    load_model,
    load_reference,
    reference_weights_dir,
    text_len_for,
    token_size_for,
)
from hilo_export.model.lowfreq import PREFIX, has_lowfreq
from hilo_export.training.sources import open_source


def test_the_distilled_model_ships_beside_the_reference_and_differs_from_it():
    stock, distilled = load_reference(REFERENCE), load_reference(REFERENCE_HILO)
    assert distilled.dtype == torch.float32 and has_lowfreq(distilled) and not has_lowfreq(stock)
    assert distilled.x_embedder.lowfreq_delta.weight.abs().sum() > 0
    # the adapters were merged into the blocks; the embedders were not trained
    block = "single_transformer_blocks.0.attn.to_q.weight"
    assert not torch.equal(distilled.state_dict()[block], stock.state_dict()[block])
    assert torch.equal(distilled.x_embedder.weight, stock.x_embedder.weight)
    card = json.loads((reference_weights_dir(REFERENCE_HILO) / "distill.json").read_text())
    assert card["settings"]["model"] == REFERENCE and card["settings"]["resolution"] == 512
    shipped = sum(f.stat().st_size for name in REFERENCE_MODELS for f in reference_weights_dir(name).iterdir())
    assert shipped <= 40e6


def test_the_name_resolves_like_the_reference():
    assert token_size_for(REFERENCE_HILO) == token_size_for(REFERENCE) == 8
    assert text_len_for(REFERENCE_HILO) == text_len_for(REFERENCE) == 1
    a, b = load_model(REFERENCE), load_model(REFERENCE_HILO)
    assert a.source == b.source == "builtin" and a.weights_sha256 != b.weights_sha256
    assert open_source(REFERENCE_HILO, "cpu", torch.float32).name == REFERENCE_HILO  # distill continues from it
    with pytest.raises(ModelError, match="not an embedded reference model"):
        reference_weights_dir("reference-v9")
    assert BenchSettings("out", fidelity_model=REFERENCE_HILO).fidelity_model == REFERENCE_HILO
    with pytest.raises(BenchError, match="fidelity runs a shipped reference model"):
        BenchSettings("out", fidelity_model="tiny-flux")


@pytest.fixture(scope="module")
def hilo_built(engines_root):
    return reference_engines((EDIT_SIZE, EDIT_SIZE), engines_root, progress=lambda _: None, model=REFERENCE_HILO)


def test_its_engines_carry_the_learned_embedding_and_edit(hilo_built, tmp_path):
    manifest = json.loads((hilo_built / "manifest.json").read_text())
    assert manifest["model"]["name"] == REFERENCE_HILO and hilo_built.name.startswith(REFERENCE_HILO)
    onnx_file = next(f["path"] for f in manifest["graphs"]["hilo"]["files"] if f["path"].endswith(".onnx"))
    names = {i.name for i in onnx.load(hilo_built / onnx_file, load_external_data=False).graph.initializer}
    assert any(n.endswith(PREFIX + "weight") for n in names)
    image, mask = edit_inputs(EDIT_SIZE)
    Image.fromarray(image).save(tmp_path / "in.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    out = tmp_path / "edit.png"
    args = ["edit", "--model", REFERENCE_HILO, "--engines", str(hilo_built), "--image", str(tmp_path / "in.png"),
            "--mask", str(tmp_path / "mask.png"), "--steps", "2", "--compare", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    edited = np.asarray(Image.open(out))
    assert np.array_equal(edited[~mask], image[~mask]) and not np.array_equal(edited[mask], image[mask])
    result = CliRunner().invoke(main, ["validate", str(hilo_built), "--trt-check"])  # every graph against torch
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["triton", str(hilo_built), "--out", str(tmp_path / "repo")])  # and it serves
    assert result.exit_code == 0, result.output
    assert (tmp_path / "repo" / "dit_hilo" / "config.pbtxt").exists()

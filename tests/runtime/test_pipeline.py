
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import EDIT_SIZE, edit_inputs
from PIL import Image

import hilo_export
from hilo_export.cli import main
from hilo_export.planning import PlannerConfig
from hilo_export.reference import EditInputError, ReferenceInpaintPipeline
from hilo_export.reference import model as ref
from hilo_export.runtime import (
    EngineTransformer,
    HiLoRuntime,
    PlannedTransformer,
    apply,
)
from hilo_export.runtime.pipeline import PipelineError, RuntimeInputError


@pytest.fixture(scope="module")
def pipe():
    pipe = ReferenceInpaintPipeline.from_reference()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_apply_swaps_the_transformer_and_restores_it(pipe, reference_built):
    stock = pipe.transformer
    with hilo_export.apply(pipe, HiLoRuntime.load(reference_built)) as applied:
        assert isinstance(pipe.transformer, EngineTransformer) and applied.stock is stock
        with pytest.raises(RuntimeInputError, match="restore"):
            apply(pipe, HiLoRuntime.load(reference_built))
    assert pipe.transformer is stock


def test_hilo_edit_keeps_the_input_outside_the_mask_and_tracks_dense(pipe, reference_built):
    image, mask = edit_inputs(EDIT_SIZE)
    with apply(pipe, HiLoRuntime.load(reference_built)):
        hilo = pipe(image, mask, steps=3, seed=5)
        dense = pipe(image, mask, steps=3, seed=5, dense=True)
        again = pipe(image, mask, steps=3, seed=5)
    assert hilo.plan.bucket != "full" and dense.plan.bucket == "full"
    for result in (hilo, dense):
        assert np.array_equal(result.image[~mask], image[~mask])
        assert len(result.step_seconds) == 3
    assert np.array_equal(hilo.image, again.image)  # seeded
    assert not np.array_equal(hilo.image[mask], image[mask])  # the hole was generated
    # the stock torch model, run by the pipeline without engines, gives the dense edit
    plain = pipe(image, mask, steps=3, seed=5)
    assert np.abs(plain.image.astype(int) - dense.image.astype(int)).max() <= 1


def test_engines_match_the_torch_hilo_transformer(pipe, reference_built):
    image, mask = edit_inputs(EDIT_SIZE, seed=1)
    runtime = HiLoRuntime.load(reference_built)
    with apply(pipe, runtime):
        engine = pipe(image, mask, steps=2, seed=0)
    stock = pipe.transformer
    pipe.transformer = PlannedTransformer(stock, ref.TOKEN_SIZE, runtime.manifest["buckets_spec"], PlannerConfig(), fill="zero")
    try:
        torch_result = pipe(image, mask, steps=2, seed=0)
    finally:
        pipe.transformer = stock
    assert torch_result.plan.same_selection(engine.plan)
    assert np.abs(torch_result.image.astype(int) - engine.image.astype(int)).max() <= 1


def test_bad_edit_inputs_are_refused(pipe):
    image, mask = edit_inputs(EDIT_SIZE)
    with pytest.raises(EditInputError, match="multiples of 8"):
        pipe(image[:60, :60], mask[:60, :60])
    with pytest.raises(EditInputError, match="mask of the image's size"):
        pipe(image, mask[:32])
    with pytest.raises(EditInputError, match="uint8"):
        pipe(image.astype(np.float32), mask)
    with pytest.raises(EditInputError, match="steps"):
        pipe(image, mask, steps=0)
    hilo = EngineTransformer.__new__(EngineTransformer)
    torch.nn.Module.__init__(hilo)
    hilo.plan = None
    with pytest.raises(PipelineError, match="prepare"):
        hilo(torch.zeros(1, 4, 4))


def test_edit_command_writes_the_edit_the_dense_edit_and_the_comparison(tmp_path, reference_built):
    image, mask = edit_inputs(EDIT_SIZE)
    Image.fromarray(image).save(tmp_path / "in.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    out = tmp_path / "out" / "edit.png"
    args = ["edit", "--engines", str(reference_built), "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
            "--steps", "2", "--compare", "--prompt", "a cat", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "prompt is ignored" in result.output and "in-mask PSNR HiLo vs dense" in result.output
    edited = np.asarray(Image.open(out))
    assert np.array_equal(edited[~mask], image[~mask])
    assert (tmp_path / "out" / "edit.dense.png").exists()
    # five image panels and the selection map, whose legend below it may make it wider and taller
    width, height = Image.open(tmp_path / "out" / "edit.compare.png").size
    assert width >= 6 * EDIT_SIZE and height > EDIT_SIZE + 22 + 40


def test_edit_command_errors_are_clear(tmp_path, reference_built, built, monkeypatch):
    # run where no engines/ folder exists: the user's own engines/ (after hilo-export bench --quick
    # it holds reference-128x128) must not decide whether this test passes
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    image, _ = edit_inputs(EDIT_SIZE)
    Image.fromarray(image).save(tmp_path / "in.png")
    Image.fromarray(np.zeros((EDIT_SIZE, EDIT_SIZE), np.uint8)).save(tmp_path / "empty.png")
    common = ["--image", str(tmp_path / "in.png"), "--out", str(tmp_path / "never.png")]
    result = CliRunner().invoke(main, ["edit", "--engines", str(reference_built), "--mask", str(tmp_path / "empty.png"), *common])
    assert result.exit_code == 2 and "mask is empty" in result.output
    Image.fromarray(np.full((EDIT_SIZE // 2, EDIT_SIZE), 255, np.uint8)).save(tmp_path / "half.png")
    before = sorted(tmp_path.iterdir())
    result = CliRunner().invoke(main, ["edit", "--mask", str(tmp_path / "half.png"), *common])  # no --engines: would build
    assert result.exit_code == 2 and "mask of the image's size" in result.output
    assert sorted(tmp_path.iterdir()) == before and not any(workdir.iterdir())  # nothing built
    Image.fromarray(np.full((EDIT_SIZE, EDIT_SIZE), 255, np.uint8)).save(tmp_path / "full.png")
    for bad in (["--steps", "0"], ["--seed", "-1"]):  # refused before any build, not after it
        result = CliRunner().invoke(main, ["edit", "--mask", str(tmp_path / "full.png"), *bad, *common])
        assert result.exit_code == 2 and "Invalid value" in result.output and not any(workdir.iterdir())
    from hilo_export.evaluation import edit as edit_module

    monkeypatch.setattr(edit_module, "build", lambda *a, **k: pytest.fail("built before checking the arguments"))
    with pytest.raises(edit_module.EditError, match="steps must be"):
        edit_module.run_edit(image, np.ones((EDIT_SIZE, EDIT_SIZE), bool), steps=0)
    result = CliRunner().invoke(main, ["edit", "--engines", str(built), "--mask", str(tmp_path / "full.png"), *common])
    assert result.exit_code == 2 and "reference model's engines" in result.output
    assert not (tmp_path / "never.png").exists()

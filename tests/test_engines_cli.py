import json

import numpy as np
from click.testing import CliRunner
from conftest import BUILD_RESOLUTION, textured_image
from PIL import Image

from hilo_export.cli import main
from hilo_export.evaluation import validate as validate_module


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_build_command_reuses_the_cache_and_prints_the_folder(built_copy):
    result = invoke("build", "--model", "tiny-flux", "--resolution", "x".join(map(str, BUILD_RESOLUTION)), "--out", built_copy)
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output and str(built_copy) in result.output


def test_build_without_tensorrt_fails_at_once_saying_what_to_install(tmp_path):
    result = invoke("build", "--backend", "trt", "--out", tmp_path / "e")
    assert result.exit_code == 2
    assert "TensorRT is not installed" in result.output and "--backend ort" in result.output
    assert not (tmp_path / "e").exists()


def test_inspect(built):
    result = invoke("inspect", built)
    assert result.exit_code == 0, result.output
    assert "tiny-flux" in result.output and "grid 12x20" in result.output
    for bucket in ("s", "m", "l", "full"):
        assert f"\n  {bucket} " in result.output
    as_json = json.loads(invoke("inspect", built, "--json").output)
    assert as_json["grid"] == [12, 20]


def test_validate_passes_and_can_fail(built, monkeypatch):
    from polygraphy.comparator import CompareFunc

    def removed(*_, **__):
        raise AssertionError("CompareFunc.simple is deprecated for removal in polygraphy 0.60: use SimpleCompareFunc")
    monkeypatch.setattr(CompareFunc, "simple", staticmethod(removed))
    result = invoke("validate", built)
    assert result.exit_code == 0, result.output
    assert "tolerance" in result.output and result.output.count(" OK") == 4
    monkeypatch.setitem(validate_module.TOLERANCES, "fp32", 0.0)  # nothing matches to the last bit
    result = invoke("validate", built)
    assert result.exit_code == 3 and "MISMATCH" in result.output


def test_plan_with_an_engine_folder_uses_its_settings(built, tmp_path):
    width, height = BUILD_RESOLUTION
    Image.fromarray(textured_image(height // 8, width // 8)).save(tmp_path / "i.png")
    Image.fromarray(np.zeros((height, width), np.uint8)).save(tmp_path / "m.png")
    args = ["plan", "--engines", built, "--image", tmp_path / "i.png", "--mask", tmp_path / "m.png", "--json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["grid"] == [12, 20] and data["bucket"] == "s"
    wrong = invoke("plan", "--engines", built, "--json")  # the bundled 592x400 example
    assert wrong.exit_code == 2 and "built for 320x192" in wrong.output


def test_calibrate_prints_a_table_that_splits_the_masks(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(20):
        mask = np.zeros((256, 256), np.uint8)
        side = int(rng.integers(16, 200))
        mask[:side, :side] = 255
        Image.fromarray(mask).save(tmp_path / f"{i:02d}.png")
    result = invoke("calibrate", "--masks", tmp_path, "--shares", "0.5,0.3,0.2")
    assert result.exit_code == 0, result.output
    assert "20 masks" in result.output and "--buckets s=" in result.output
    bad = invoke("calibrate", "--masks", tmp_path, "--shares", "0.9,0.9,0.9")
    assert bad.exit_code == 2 and "adding up to at most 1" in bad.output

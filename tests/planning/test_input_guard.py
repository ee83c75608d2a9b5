"""Bad inputs get one clear error, and files of any bit depth are read at their real scale."""

import inspect
import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hilo_export.cli import main
from hilo_export.images import ImageReadError, read_gray, read_rgb
from hilo_export.planning import calibration
from hilo_export.planning.buckets import BucketError, parse_buckets
from hilo_export.planning.inputs import DEFAULT_TOKEN_SIZE
from hilo_export.planning.plan import PlanError, plan_tokens

# ------------------------------------------------------------------ item 9: 16-bit and float files


def test_16_bit_and_float_files_are_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")  # a 16-bit grayscale PNG (mode I;16 / I)
    image = read_rgb(tmp_path / "g16.png")
    assert image.dtype == np.uint8 and image.shape == (32, 64, 3)
    assert np.abs(image[..., 0].astype(int) - np.rint(ramp / 257)).max() <= 1  # convert("RGB") gave 255 almost everywhere
    assert 120 < image.mean() < 135
    Image.fromarray((ramp / 65535).astype(np.float32)).save(tmp_path / "f.tiff")
    assert np.abs(read_gray(tmp_path / "f.tiff").astype(int) - np.rint(ramp / 257)).max() <= 1
    Image.fromarray((ramp / 65535 * 4000).astype(np.float32)).save(tmp_path / "hdr.tiff")
    with pytest.raises(ImageReadError, match=r"only floats in \[0, 1\]"):
        read_rgb(tmp_path / "hdr.tiff")


def test_plan_command_reads_a_16_bit_mask(tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "i.png")
    mask = np.zeros((64, 64), np.uint16)
    mask[:16, :16] = 65535
    mask[16:, 16:] = 20 * 257  # a dark background: not masked
    Image.fromarray(mask).save(tmp_path / "m16.png")
    result = CliRunner().invoke(main, ["plan", "--image", str(tmp_path / "i.png"), "--mask", str(tmp_path / "m16.png"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["mask_ratio"] == pytest.approx(0.0625)


# ------------------------------------------------------------------ item 10: decompression bombs


def test_a_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)  # 4x over the limit: Pillow raises, not warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for command in (["plan"], ["edit", "--out", str(tmp_path / "never.png")]):
            result = CliRunner().invoke(main, [*command, "--image", str(tmp_path / "big.png")])
            assert result.exit_code == 2 and "too large to decode safely" in result.output, result.output
            assert "Traceback" not in result.output
    assert not (tmp_path / "never.png").exists()


# ------------------------------------------------------------------ item 12: float masks


@pytest.mark.parametrize("bad, message", [(np.inf, "infinite"), (255.0, r"lie in \[0, 1\]"), (-0.5, r"lie in \[0, 1\]")])
def test_float_masks_are_range_checked(bad, message):
    image = np.zeros((32, 32, 3), np.uint8)
    mask = np.full((32, 32), 20.0 / 255, np.float32)
    mask[0, 0] = bad
    with pytest.raises(PlanError, match=message):
        plan_tokens(image, mask, token_size=8)


# ------------------------------------------------------------------ item 13: bucket specs of other types


@pytest.mark.parametrize("spec", [5, 0.3, b"s,m", {"s": 0.2}, ["s", 3], [None]])
def test_non_string_bucket_specs_are_clear_errors(spec):
    with pytest.raises(BucketError, match="give buckets as a string"):
        parse_buckets(spec)
    with pytest.raises(BucketError):
        plan_tokens(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), bool), token_size=8, buckets=spec)


# ------------------------------------------------------------------ item 14: model configs and sizes


@pytest.mark.parametrize("config", ["[1, 2]", '{"_class_name": "FluxTransformer2DModel", "num_layers": "two"}', "{oops"])
def test_a_bad_config_json_is_a_clear_error(tmp_path, config):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(config)
    result = CliRunner().invoke(main, ["build", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "config.json" in result.output


@pytest.mark.parametrize("resolution", ["100000x100000", "0x64"])
def test_huge_resolutions_are_refused_before_any_work(tmp_path, resolution):
    for command in (["build", "--model", "tiny-flux"], ["masks"]):
        result = CliRunner().invoke(main, [*command, "--resolution", resolution, "--out", str(tmp_path / "out")])
        assert result.exit_code == 2 and "each side must be 1 to 8192 pixels" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_huge_token_grids_are_refused():
    from hilo_export.export import BuildError, BuildRequest, build

    with pytest.raises(BuildError, match="engines hold at most 65536"):
        build(BuildRequest("tiny-flux", resolution=(8192, 8192), token_size=8), progress=lambda _: None)


# ------------------------------------------------------------------ item 17: what a newcomer hit


def test_calibrate_reads_the_folders_masks_writes(tmp_path):
    result = CliRunner().invoke(main, ["masks", "--out", str(tmp_path / "suite"), "--resolution", "128x128",
                                       "--per-category", "2"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "suite").iterdir()} >= {"small", "medium", "large"}
    assert len(calibration.read_masks(tmp_path / "suite")) == 6
    result = CliRunner().invoke(main, ["calibrate", "--masks", str(tmp_path / "suite")])
    assert result.exit_code == 0 and "6 masks, token size 16" in result.output, result.output


def test_the_cli_and_the_api_share_one_token_size_default():
    from hilo_export.cli import calibrate, plan

    def default(command):
        return next(p.default for p in command.params if p.name == "token_size")
    api = {f: inspect.signature(f).parameters["token_size"].default for f in (plan_tokens, calibration.calibrate)}
    assert default(plan) == default(calibrate) == DEFAULT_TOKEN_SIZE == 16 and set(api.values()) == {16}


def test_build_edit_and_bench_agree_on_the_reference_folder(monkeypatch):
    from hilo_export.evaluation import edit
    from hilo_export.export import default_out_dir

    assert default_out_dir("reference", (592, 400)).as_posix() == "engines/reference-592x400"
    asked = []
    monkeypatch.setattr(edit, "build", lambda request, progress: asked.append(request) or request.out_dir)
    assert edit.reference_engines((592, 400)).as_posix() == "engines/reference-592x400"
    assert edit.reference_engines((592, 400), model="reference-hilo").as_posix() == "engines/reference-hilo-592x400"
    assert [r.model for r in asked] == ["reference", "reference-hilo"]

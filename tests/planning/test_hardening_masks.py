"""Mask files of every bit depth and with transparency read as what they show."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hilo_export.cli import main
from hilo_export.images import ImageReadError, read_gray, read_rgb


def mask_ratio(tmp_path, mask_file):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "i.png")
    result = CliRunner().invoke(main, ["plan", "--image", str(tmp_path / "i.png"), "--mask", str(mask_file), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["mask_ratio"]


def square(dtype, on):
    mask = np.zeros((64, 64), dtype)
    mask[:16, :16] = on
    return mask


@pytest.mark.parametrize("on", [1, 255, 65535])
def test_a_16_bit_label_mask_reads_like_its_8_bit_twin(tmp_path, on):
    """0/1 in 16 bits was scaled to 0/0 (empty); the same values in 8 bits plan the square."""
    Image.fromarray(square(np.uint16, on)).save(tmp_path / "m16.png")
    Image.fromarray(square(np.uint8, 1)).save(tmp_path / "m8.png")
    assert mask_ratio(tmp_path, tmp_path / "m16.png") == mask_ratio(tmp_path, tmp_path / "m8.png") == pytest.approx(0.0625)


@pytest.mark.parametrize("colour", [(255, 255, 255), (0, 0, 0), (200, 30, 30)])
def test_a_mask_in_the_alpha_channel_is_read(tmp_path, colour):
    """An RGBA mask whose alpha holds the mask (a uniform colour) used to read as all white or all black."""
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = square(np.uint8, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    assert np.array_equal(read_gray(tmp_path / "m.png"), square(np.uint8, 255))
    assert mask_ratio(tmp_path, tmp_path / "m.png") == pytest.approx(0.0625)
    la = np.stack([np.full((64, 64), 128, np.uint8), square(np.uint8, 255)], axis=-1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert np.array_equal(read_gray(tmp_path / "la.png"), square(np.uint8, 255))


def test_an_opaque_rgba_mask_reads_its_gray_levels(tmp_path):
    rgba = np.full((64, 64, 4), 255, np.uint8)
    rgba[..., :3] = square(np.uint8, 255)[..., None]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    assert np.array_equal(read_gray(tmp_path / "m.png"), square(np.uint8, 255))


def test_painted_strokes_on_a_transparent_layer_read_where_painted(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = 255  # white paint, but the transparent part holds colour noise too
    rgba[40:, 40:, :3] = 17
    rgba[..., 3] = square(np.uint8, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    assert np.array_equal(read_gray(tmp_path / "m.png"), square(np.uint8, 255))


def test_a_nan_in_a_float_image_is_named_as_such(tmp_path):
    """It used to get "float pixels in [nan, nan]; only floats in [0, 1]": a range it was in."""
    values = np.full((32, 32), 0.5, np.float32)
    values[3, 4] = np.nan
    Image.fromarray(values).save(tmp_path / "f.tiff")
    for read in (read_rgb, read_gray):
        with pytest.raises(ImageReadError, match="NaN or infinite pixels") as caught:
            read(tmp_path / "f.tiff")
        assert "nan," not in str(caught.value)

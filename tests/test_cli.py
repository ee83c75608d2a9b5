import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from hilo_export.cli import main
from hilo_export.examples import example_image


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_plan_json_on_the_bundled_example():
    result = invoke("plan", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    width, height = example_image().size
    assert data["grid"] == [height // 16, width // 16]  # plan_tokens' default: Flux's 16 px tokens
    assert data["tokens"]["total"] == data["capacity"] == len(data["keep_indices"]) + data["tokens"]["low_freq"]
    assert 0 < data["mask_ratio"] < 0.2 and data["bucket"] == "s"


def test_plan_writes_the_selection_picture(tmp_path):
    out = tmp_path / "pictures" / "selection.png"
    result = invoke("plan", "--out", str(out), "--buckets", "s=0.3,m")
    assert result.exit_code == 0, result.output
    picture = Image.open(out)
    width, height = example_image().size
    assert picture.width >= width and picture.height > height  # image plus legend panel
    assert sorted(p.name for p in out.parent.iterdir()) == ["selection.png"], "no temporary files left behind"
    assert "bucket s" in result.output


def test_plan_with_user_files(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    mask = np.zeros((64, 96), np.uint8)
    mask[:, :] = 255
    Image.fromarray(image).save(tmp_path / "i.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    result = invoke("plan", "--image", str(tmp_path / "i.png"), "--mask", str(tmp_path / "m.png"), "--json")
    assert json.loads(result.output)["bucket"] == "full"


def test_plan_reads_0_1_mask_files_as_binary(tmp_path):
    mask = np.zeros((64, 96), np.uint8)
    mask[:16, :16] = 1
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(tmp_path / "i.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    result = invoke("plan", "--image", str(tmp_path / "i.png"), "--mask", str(tmp_path / "m.png"), "--json")
    assert json.loads(result.output)["mask_ratio"] == mask.mean()


def test_plan_errors_are_one_clear_line(tmp_path):
    Image.fromarray(np.zeros((50, 64, 3), np.uint8)).save(tmp_path / "odd.png")
    Image.fromarray(np.zeros((50, 64), np.uint8)).save(tmp_path / "odd_mask.png")
    (tmp_path / "junk.png").write_text("not a picture")
    out = tmp_path / "never.png"
    cases = [
        (["--image", str(tmp_path / "odd.png"), "--mask", str(tmp_path / "odd_mask.png")], "multiples of the token size 16"),
        (["--mask", str(tmp_path / "odd_mask.png")], "resize the mask"),
        (["--image", str(tmp_path / "junk.png")], "cannot read"),
        (["--buckets", "huge"], "unknown bucket 'huge'"),
        (["--out", str(tmp_path / "junk.png" / "x.png")], "cannot write"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, ["plan", "--out", str(out), *args])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_plan_context_policies_send_the_same_length(tmp_path):
    rng = np.random.default_rng(0)
    image = np.full((256, 256, 3), 120, np.uint8)
    image[:128, :100] = rng.integers(0, 256, (128, 100, 3))
    Image.fromarray(image).save(tmp_path / "image.png")
    for i, box in enumerate([(20, 60, 30, 90), (100, 250, 10, 200), (0, 256, 0, 150)]):
        mask = np.zeros((256, 256), np.uint8)
        mask[box[0]:box[1], box[2]:box[3]] = 255
        Image.fromarray(mask).save(tmp_path / f"mask{i}.png")
        for sizing in ("exact", "padded"):
            plans = {}
            for context in ("sobel", "ring", "random"):
                result = invoke("plan", "--image", str(tmp_path / "image.png"), "--mask", str(tmp_path / f"mask{i}.png"),
                             "--token-size", "8", "--sizing", sizing, "--context", context, "--json")
                assert result.exit_code == 0, result.output
                plans[context] = json.loads(result.output)
            assert len({p["length"] for p in plans.values()}) == 1, (box, sizing)
            assert {p["config"]["context"] for p in plans.values()} == {"sobel", "ring", "random"}
            tokens = plans["ring"]["tokens"]
            if plans["ring"]["bucket"] != "full" and tokens["total"] > tokens["mask"] + tokens["low_freq"]:  # context to choose
                assert plans["ring"]["keep_indices"] != plans["random"]["keep_indices"]

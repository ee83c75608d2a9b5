"""bench --model FOLDER: a saved tiny FluxFillPipeline benched on the user's images, masks and prompt."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FILL_SIZE, fill_inputs
from PIL import Image

from hilo_export.cli import main
from hilo_export.evaluation.edit_set import CATEGORY_LIMITS, category_of, load_cases, read_prompts, resize_like_pipeline
from hilo_export.evaluation.phases import PHASES
from hilo_export.evaluation.progress import Eta
from hilo_export.evaluation.settings import BenchError
from hilo_export.evaluation.stats import paired_stats


def _square(size: int, side: int, at: tuple[int, int] = (8, 8)) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[at[0]: at[0] + side, at[1]: at[1] + side] = 255
    return mask


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """Two photos (one of another size and shape than the engines') and a mask per category (one named after a photo)."""
    root = tmp_path_factory.mktemp("user")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    image, _ = fill_inputs()
    Image.fromarray(image).save(images / "a.png")
    Image.fromarray(np.asarray(Image.fromarray(image).resize((200, 150)))).save(images / "b.png")
    Image.fromarray(_square(FILL_SIZE, 24, (72, 80))).save(masks / "a_mask.png")  # 3.5%: small, edits a.png
    Image.fromarray(_square(FILL_SIZE, 56)).save(masks / "m.png")  # 19%: medium
    Image.fromarray(_square(2 * FILL_SIZE, 170, (40, 40))).save(masks / "l.png")  # 44%, at twice the size: large
    return images, masks


def test_bench_on_a_saved_fill_pipeline_writes_the_report(fill_folder, fill_built, user_files, tmp_path):
    images, masks = user_files
    out = tmp_path / "report"
    args = ["bench", "--model", str(fill_folder), "--engines", str(fill_built), "--images", str(images), "--masks",
            str(masks), "--prompt", "a red cup", "--steps", "2", "--seeds", "0,1", "--repeats", "2", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "pipeline" and report["resolution"] == [FILL_SIZE, FILL_SIZE]
    assert any(r.startswith("b.png 200x150") for r in report["inputs"]["resized"])
    assert report["inputs"]["prompts"] == ["a red cup"]
    cats = {c["name"]: c for c in report["categories"]}
    assert list(cats) == ["small", "medium", "large"] and all(c["n_masks"] == 1 for c in cats.values())
    assert cats["small"]["edits"][0]["name"] == "a_mask@a"  # paired with its photo by name
    for c in cats.values():
        low, high = c["mask_ratio_limits"]
        assert low <= c["mask_ratio_mean"] < high
        assert len(c["speedup_rounds"]) == 2 and c["speedup_q25"] <= c["speedup"] <= c["speedup_q75"]
        assert c["ideal_speedup"] >= 1 and sum(c["bucket_mix"].values()) == pytest.approx(1.0)
        for mode in ("hilo", "dense"):
            phases = c["phases_s"][mode]
            assert set(phases) == {*PHASES, "total"} and phases["denoising"] > 0 and phases["vae_decode"] > 0
            assert phases["text_encoders"] > 0 and sum(phases[p] for p in PHASES) == pytest.approx(phases["total"])
        assert c["phases_s"]["hilo"]["planner"] > 0 and c["edit_speedup"] > 0
        assert c["outside_mask_max_abs_diff"] == 0  # composited: the input outside the mask, bit for bit
        for key in ("psnr_mask_hilo_vs_dense", "psnr_mask_noise_floor", "psnr_mask_margin_over_floor"):
            assert set(c["per_edit"][key]) == {"mean", "sd", "n", "ci95"}
        assert (out / c["edits"][0]["picture"]).stat().st_size > 0
    # the two paths really ran: HiLo on the planned buckets' engines, dense on full's, and they differ
    steps = 2 * 2 * 3  # steps x seeds x edits
    assert report["engine_calls"]["dense"] == {"full": steps}
    planned = {e["bucket"] for c in cats.values() for e in c["edits"]}
    assert set(report["engine_calls"]["hilo"]) == planned and sum(report["engine_calls"]["hilo"].values()) == steps
    small = cats["small"]
    assert small["edits_compressed"] == 1 and small["edits"][0]["bucket"] != "full"
    assert small["psnr_mask_hilo_vs_dense"] is not None and math.isfinite(small["psnr_mask_hilo_vs_dense"])
    assert small["psnr_mask_noise_floor"] is not None and small["ssim_mask_hilo_vs_dense"] < 1
    assert report["all"]["edits"] == 3 and report["all"]["per_edit"]["psnr_mask_hilo_vs_dense"]["n"] >= 1
    assert report["wall_s"] > 0 and report["peak_memory_gb"] > 0
    md = (out / "report.md").read_text()
    for text in ("Per-step latency", "Whole edits by phase", "seed-to-seed floor", "VAE encode", "b.png 200x150",
                 "speedup.png", "fidelity.png", "Wall time"):
        assert text in md, text
    assert (out / "speedup.png").stat().st_size > 0 and (out / "fidelity.png").stat().st_size > 0
    assert "bench done in" in result.output and "ETA" in result.output


def test_pipeline_bench_refuses_settings_it_cannot_run(fill_folder, tmp_path):
    def bench(*args):
        return CliRunner().invoke(main, ["bench", "--model", str(fill_folder), "--out", str(tmp_path / "r"), *args])

    for args, message in ((["--seeds", "3"], "two different seeds"), (["--sweep"], "--sweep applies to the built-in"),
                          (["--seeds", "a,b"], "whole numbers")):
        result = bench(*args)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["bench", "--quick", "--images", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--images applies to a pipeline bench" in result.output
    assert not (tmp_path / "r").exists()


def test_user_masks_are_binned_by_ratio_and_resized_like_the_pipeline(user_files):
    images, masks = user_files
    lines = []
    cases = load_cases(images, masks, ["x", "y"], (FILL_SIZE, FILL_SIZE), 1, lines.append)
    assert [c.category for c in cases] == ["small", "large", "medium"]  # a_mask, l, m (file name order)
    assert all(c.image.shape == (FILL_SIZE, FILL_SIZE, 3) and c.mask.dtype == bool for c in cases)
    assert cases[0].prompt == "x" and cases[0].source_size is None and cases[1].mask.mean() == pytest.approx(0.44, abs=0.01)
    assert any("resized" in line and "b.png" in line for line in lines)
    assert any("small 1 (mask ratio 0.0%-11.2%)" in line for line in lines)
    assert category_of(CATEGORY_LIMITS["medium"][0]) == "medium" and category_of(0.99) == "large"
    image, mask = resize_like_pipeline(np.zeros((30, 50, 3), np.uint8), np.eye(30, 50) > 0, (64, 32))
    assert image.shape == (32, 64, 3) and mask.shape == (32, 64) and mask.dtype == bool
    suite = load_cases(None, "suite", ["p"] * 3, (FILL_SIZE, FILL_SIZE), 2, lines.append)
    assert [c.category for c in suite].count("medium") == 2


def test_prompts_file_needs_one_line_per_image(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red cup\n\na blue dog\n")
    assert read_prompts("", path, 2) == ["a red cup", "a blue dog"]
    with pytest.raises(BenchError, match="2 prompts for 3 images"):
        read_prompts("", path, 3)
    with pytest.raises(BenchError, match="not both"):
        read_prompts("x", path, 2)


def test_paired_stats_gives_the_student_t_interval():
    stats = paired_stats([1.0, 2.0, 3.0, 4.0])
    assert stats["mean"] == 2.5 and stats["n"] == 4 and stats["sd"] == pytest.approx(1.2910, abs=1e-4)
    # t(0.975, 3) = 3.1824
    assert stats["ci95"] == pytest.approx([2.5 - 3.1824 * 1.2910 / 2, 2.5 + 3.1824 * 1.2910 / 2], abs=1e-3)
    assert paired_stats([5.0]) == {"mean": 5.0, "sd": None, "n": 1, "ci95": None}
    with pytest.raises(ValueError, match="finite"):
        paired_stats([math.inf])


def test_eta_reports_first_last_and_when_time_passes():
    lines = []
    eta = Eta("edits", 4, lines.append, every_s=3600)
    for _ in range(4):
        eta.tick("x")
    assert len(lines) == 2 and lines[0].startswith("edits 1/4 (x)") and "ETA" in lines[0] and lines[1].endswith("done")


def test_tiny_pipeline_command_writes_a_loadable_fill_pipeline(tmp_path):
    from hilo_export.evaluation.fill_edit import fill_token_size

    out = tmp_path / "tiny"
    result = CliRunner().invoke(main, ["tiny-pipeline", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "FluxFillPipeline"
    assert fill_token_size(out) == 16
    result = CliRunner().invoke(main, ["tiny-pipeline", "--out", str(out)])
    assert result.exit_code == 2 and "not empty" in result.output


def test_masks_written_by_the_masks_command_are_read_from_their_subfolders(tmp_path):
    from hilo_export.evaluation.masks import write_suite

    write_suite(tmp_path / "masks", (FILL_SIZE, FILL_SIZE), 2, 0)  # masks/<category>/<name>.png
    cases = load_cases(None, tmp_path / "masks", ["p"] * 3, (FILL_SIZE, FILL_SIZE), 1, lambda _: None)
    assert len(cases) == 6 and {c.image_name for c in cases} == {"chelsea.png", "coffee.png", "rocket.png"}
    assert all(c.category == category_of(c.mask_ratio) for c in cases)

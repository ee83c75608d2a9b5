import json
import math

import numpy as np
import pytest

from hilo_export.evaluation import BenchSettings, run_bench
from hilo_export.evaluation.flops import StepFlops
from hilo_export.evaluation.metrics import border_ring, psnr, ssim
from hilo_export.model import BUILTIN_CONFIGS
from hilo_export.planning import PlannerConfig

REQUIRED = ("name", "mask_ratio_mean", "token_ratio_mean", "speedup", "speedup_q25", "speedup_q75", "speedup_iqr",
            "speedup_rounds", "ideal_speedup", "ideal_speedup_plans", "achieved_over_ideal", "psnr_mask_hilo_vs_dense",
            "psnr_mask_hilo_vs_truth", "psnr_mask_dense_vs_truth", "ssim_mask_hilo_vs_dense")


def test_flops_fit_is_exact_and_grows_with_tokens():
    flops = StepFlops.count(BUILTIN_CONFIGS["tiny-flux"], text_len=8)
    assert flops.check(700) < 1e-9
    assert 0 < flops(64) < flops(128) < flops(256)
    assert flops(256) / flops(64) > 256 / 64  # attention makes it superlinear


def test_metrics():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = a.copy()
    b[0, 0, 0] ^= 16
    region = np.zeros((32, 32), bool)
    region[:4, :4] = True
    assert psnr(a, a) == math.inf and ssim(a, a) == pytest.approx(1.0)
    assert psnr(a, b, region) < psnr(a, b)  # the one changed pixel weighs more in a small region
    assert psnr(a, b, ~region) == math.inf
    assert ssim(a, 255 - a) < 0.1
    # SSIM is read per region: the changed pixel's neighbourhood scores below the untouched far corner
    far = np.zeros((32, 32), bool)
    far[20:, 20:] = True
    assert ssim(a, b, region) < ssim(a, b, far) == pytest.approx(1.0)
    noisy = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, noisy) < ssim(a, b) < 1.0
    with pytest.raises(ValueError, match="empty region"):
        psnr(a, b, np.zeros((32, 32), bool))
    ring = border_ring(np.pad(np.ones((10, 10), np.uint8), 11), 3)
    assert ring.sum() == 100 - 16 and not ring[16, 16]


def test_quick_bench_writes_the_full_report(tmp_path, engines_root, built, reference_built):
    out = tmp_path / "report"
    messages = []
    report = run_bench(BenchSettings.quick(out, engines_root=engines_root), progress=messages.append)
    assert sum("up to date" in m for m in messages) >= 4  # the session's builds were reused, not rebuilt
    saved = json.loads((out / "report.json").read_text())
    assert [c["name"] for c in saved["categories"]] == ["small", "medium", "large"]
    for c in saved["categories"]:
        for key in REQUIRED:
            assert key in c, key
        assert c["speedup"] > 0 and c["ideal_speedup"] >= 1 and c["flux1_dev_ideal_speedup"] >= 1
        assert len(c["speedup_rounds"]) == 3 and c["speedup_q25"] <= c["speedup"] <= c["speedup_q75"]
        assert sum(t["weight"] for t in c["timed_lengths"]) == pytest.approx(1.0)
        assert sum(c["bucket_mix"].values()) == pytest.approx(1.0)
        assert c["fidelity"]["outside_mask_max_abs_diff"] == 0
        assert c["psnr_mask_noise_floor"] is not None
        # compressed edits are pooled; edits planned into full (the dense edit) are scored apart
        compressed = c["fidelity"]["edits_compressed"]
        assert (c["psnr_mask_dense_vs_truth"] is not None) == (compressed > 0)
        assert (c["psnr_full_mask_dense_vs_truth"] is not None) == (c["fidelity"]["edits_full"] > 0)
    assert saved["categories"][0]["mask_ratio_mean"] < saved["categories"][2]["mask_ratio_mean"]
    # both grids are reported (the full bench runs them on the same 64x64 grid; quick on small ones)
    assert saved["latency_grid"] == [12, 20] and saved["fidelity_grid"] == [16, 16]
    for c in saved["categories"]:
        f = c["fidelity"]
        assert f["edits_compressed"] + f["edits_full"] == f["edits"] and "psnr_full_mask_dense_vs_truth" in c
    probe = saved["probe"]
    for key in ("psnr_mask_dense_vs_truth", "psnr_mask_best_fill_vs_truth", "psnr_mask_hilo_vs_dense",
                "psnr_mask_core_only_vs_dense"):
        assert key in probe, key
    assert probe["psnr_mask_dense_vs_truth"] is not None and probe["psnr_mask_best_fill_vs_truth"] is not None
    assert [t["category"] for t in report["targets"]].count("probe") == 2
    md = (out / "report.md").read_text()
    assert "Context probe" in md and "grid 16x16" in md
    assert report["targets"] and all(isinstance(t["met"], bool) for t in report["targets"])
    # speed targets are met only when the IQR's lower end clears them
    assert set(report["speed_targets"]) == {f"speedup {c['name']}" for c in report["categories"]}
    for name, t in report["speed_targets"].items():
        assert t["met"] == (t["iqr"][0] >= t["target"]) and t["iqr"][0] <= t["median"] <= t["iqr"][1]
    # per-edit spread, paired by mask, image and seed: one pair per compressed edit
    for c in saved["categories"]:
        assert c["fidelity"]["paired"]["edits"] == c["fidelity"]["edits_compressed"]
    md = (out / "report.md").read_text()
    assert "| small |" in md and "speedup.png" in md and "fidelity.png" in md and "IQR" in md
    assert saved["latency"]["sizing"] == PlannerConfig().sizing and saved["latency"]["rounds"] == 3
    assert (out / "speedup.png").stat().st_size > 0 and (out / "fidelity.png").stat().st_size > 0


def test_sweep_draws_speed_against_fidelity(tmp_path):
    from hilo_export.evaluation.sweep import run_sweep, variants

    sweep = run_sweep(BenchSettings.quick(tmp_path, per_category=2), progress=lambda _: None)
    assert [v["label"] for v in sweep["variants"]] == [v.label for v in variants()]
    by_label = {v["label"]: v["categories"] for v in sweep["variants"]}
    for label, cats in by_label.items():
        assert set(cats) == {"small", "medium", "large"}
        assert all(c["ideal_speedup"] >= 1 for c in cats.values()), label
        for c in cats.values():  # one mask x one image x two seeds per category: compressed, or full and apart
            assert c["paired"]["edits"] + c["edits_full"] == 2, label
            assert (c["psnr_mask_hilo_vs_truth"] is None) == (c["paired"]["edits"] == 0)
    # without dilation a mask needs fewer tokens; exact plans never send more than padded ones
    by_label = {label.removesuffix(" (defaults)"): cats for label, cats in by_label.items()}
    for category in ("small", "medium", "large"):
        exact = by_label["exact sizing"][category]["token_ratio_mean"]
        assert by_label["exact, dilation 0"][category]["token_ratio_mean"] <= exact
        assert exact <= by_label["padded (spare capacity filled)"][category]["token_ratio_mean"]
    assert sum(v["label"].endswith(" (defaults)") for v in sweep["variants"]) == 1
    md = (tmp_path / "sweep.md").read_text()
    assert (tmp_path / "sweep.png").stat().st_size > 0 and "| padded (spare" in md and "keeps the targets" in md


def test_bench_command_refuses_bad_settings(tmp_path):
    from click.testing import CliRunner

    from hilo_export.cli import main

    for args, message in ((["--repeats", "0"], "repeats must be at least 1"),
                          (["--skip-latency", "--skip-fidelity"], "nothing to measure")):
        result = CliRunner().invoke(main, ["bench", "--quick", "--out", str(tmp_path / "r"), *args])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()

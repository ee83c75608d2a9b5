"""The bench's report and pictures: readable numbers, target lines, legends that hide nothing."""

import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import LineCollection

from hilo_export.evaluation import report as report_module
from hilo_export.evaluation import sweep as sweep_module


@pytest.fixture
def figures(monkeypatch):
    """Every figure a plot function closes, kept for inspection."""
    kept = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    yield kept
    for fig in kept:
        close(fig)


def quick_report():
    length = {"bucket": "s", "kept": 60, "sequence": 64, "step_s_median": 0.004, "ideal_speedup": 1.6,
              "speedup": {"median": 1.5, "q25": 1.4, "q75": 1.6, "iqr": 0.2}}
    category = {"name": "small", "mask_ratio_mean": 0.06, "token_ratio_mean": 0.3, "bucket_mix": {"m": 0.25, "full": 0.25, "s": 0.5},
                "timed_lengths": [{"bucket": "s", "kept": 60, "sequence": 64, "weight": 1.0}],
                "step_s_hilo": 0.004, "step_s_dense": 0.006, "speedup": 1.5, "speedup_q25": 1.4, "speedup_q75": 1.6,
                "speedup_iqr": 0.2, "ideal_speedup": 1.6, "ideal_speedup_plans": 1.7, "achieved_over_ideal": 0.94,
                "flux1_dev_ideal_speedup": 3.0, "planner_ms_median": 1.0, "edit_s_hilo_composed": 0.032,
                "edit_s_dense_composed": 0.048}
    return {"settings": {"repeats": 1, "per_category": 1, "bucket_table": {"s": 0.2, "m": 0.45, "l": 0.75, "full": 1.0}},
            "latency": {"model": "tiny-flux", "resolution": [320, 192], "grid": [12, 20], "text_len": 8,
                        "backend": {"name": "ort", "version": "1", "device": "cpu"}, "sizing": "padded", "rounds": 1,
                        "lengths": [length]},
            "categories": [category], "targets": [], "wall_s": 3.0}


def test_quick_bench_numbers_read_right():
    text = report_module.markdown(quick_report())
    assert "in 1 interleaved round in one process" in text and "1 rounds" not in text and "1 mask per category" in text
    assert "0.20 (1.40-1.60)" in text  # the IQR of the per-round ratios
    assert "32 ms / 48 ms" in text and "0.0 s" not in text
    assert "s 50%, m 25%, full 25%" in text  # the bucket table's order, not the order plans came in


def test_bar_charts_draw_targets_and_keep_the_legend_off_the_bars(tmp_path, figures):
    report_module.bar_chart(tmp_path / "speedup.png", ["small", "medium", "large"],
                             {"measured": [3.6, 2.5, 1.2], "ideal": [3.9, 2.9, 1.9]}, "speedup", "t",
                             targets={0: 3.5, 1: 2.9, 2: 1.9}, target_label="target speedup")
    (fig,) = figures
    ax = fig.axes[0]
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(lines) == 3 and [seg[0][1] for c in lines for seg in c.get_segments()] == [3.5, 2.9, 1.9]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend, axes_box = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= axes_box.x1  # outside the axes: it cannot cover a bar
    assert "target speedup" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert (tmp_path / "speedup.png").exists()


def test_sweep_picture_marks_the_30_db_floor_and_the_choice(tmp_path, figures):
    def variant(label, speed, db):
        return {"label": label, "categories": {c: {"ideal_speedup": speed, "psnr_mask_hilo_vs_dense": db}
                                               for c in ("small", "medium", "large")}}
    sweep = {"variants": [variant("fast but blurry", 4.0, 25.0), variant("chosen one", 3.0, 31.0),
                          variant("slow", 2.0, None)]}
    assert sweep_module.chosen_variant(sweep) == "chosen one"
    sweep_module._plot(sweep, tmp_path / "sweep.png")
    (fig,) = figures
    for ax in fig.axes:
        assert not ax.texts  # no per-point labels to overlap
        assert any(list(line.get_ydata()) == [30.0, 30.0] for line in ax.get_lines())
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"fast but blurry", "chosen one", "slow", "30 dB floor"} <= set(labels)
    assert any(label.startswith("chosen") and "fidelity targets" in label for label in labels)

"""A build request is checked when it is made; sizes no machine holds are refused before any work;
a build removes only what it wrote; weights with NaN or Inf are named."""

import time

import pytest
import torch
from click.testing import CliRunner
from conftest import BUILD_RESOLUTION

from hilo_export.cli import main
from hilo_export.export import BuildError, BuildRequest, build
from hilo_export.export import builder as build_module
from hilo_export.export import request as request_module
from hilo_export.export.errors import ExportError
from hilo_export.planning import PlannerConfig


def quiet(_):
    pass


# ------------------------------------------------------------------ item 12: fields checked when made


@pytest.mark.parametrize("fields, message", [
    (dict(resolution="64x48"), "resolution '64x48' is text"),
    (dict(resolution=(64.0, 48.0)), "two whole numbers of pixels"),
    (dict(resolution=(64,)), r"must be \(width, height\)"),
    (dict(resolution=(True, 48)), "two whole numbers"),
    (dict(batch=2.5), "batch must be a whole number"),
    (dict(batch=True), "batch must be a whole number"),
    (dict(config=None), "config must be a PlannerConfig"),
    (dict(config={"dilation": 1}), "config must be a PlannerConfig"),
    (dict(out_dir=123), "out_dir 123 .* is not a folder path"),
    (dict(model=None), "model None"),
    (dict(token_size="16"), "token size must be a whole number"),
    (dict(text_len=8.0), "text length must be a whole number"),
    (dict(precision=None), "precision None is not a name"),
    (dict(plugins="yes"), "plugins must be True or False"),
    (dict(buckets=7), "buckets 7"),
    (dict(buckets=""), 'names no bucket: give e.g. "s,m,l", or "full"'),
    (dict(buckets=" "), "names no bucket"),
])
def test_request_fields_are_checked_when_the_request_is_made(fields, message):
    with pytest.raises(BuildError, match=message):
        BuildRequest(**{"model": "tiny-flux", **fields})


def test_a_good_request_is_normalized():
    request = BuildRequest("tiny-flux", resolution=[64, 48], out_dir="engines/x", config=PlannerConfig())
    assert request.resolution == (64, 48) and request.out_dir.name == "x"


def test_empty_buckets_on_the_command_line_are_refused(tmp_path):
    result = CliRunner().invoke(main, ["build", "--model", "tiny-flux", "--buckets", "", "--resolution", "64x48",
                                       "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "names no bucket" in result.output and '"full"' in result.output, result.output
    assert not (tmp_path / "e").exists()


# ------------------------------------------------------------------ item 8: sizes refused up front


@pytest.mark.parametrize("option, value", [("--text-len", "100000000"), ("--batch", "1000000")])
def test_sizes_no_engine_folder_holds_are_refused_at_once(tmp_path, option, value):
    start = time.monotonic()
    result = CliRunner().invoke(main, ["build", "--model", "tiny-flux", "--resolution", "64x48", option, value,
                                       "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "at most" in result.output and "Traceback" not in result.output, result.output
    assert time.monotonic() - start < 10 and not (tmp_path / "e").exists()


def test_sizes_this_machine_cannot_run_are_refused_with_the_memory_they_need(tmp_path, monkeypatch):
    monkeypatch.setattr(request_module, "machine_memory", lambda: 64 << 20)  # a 64 MiB machine
    monkeypatch.setattr(build_module, "export_graph", lambda *a, **k: pytest.fail("exported before refusing"))
    with pytest.raises(BuildError, match=r"batch 64, 12 image and 4096 text tokens: one step would need about "
                                         r"[\d.]+ GiB of memory; this machine has 0.0625 GiB"):
        build(BuildRequest("tiny-flux", resolution=(64, 48), batch=64, text_len=4096, out_dir=tmp_path / "e"),
              progress=quiet)
    assert not (tmp_path / "e").exists()
    need = request_module.step_bytes({"num_attention_heads": 24, "attention_head_dim": 128}, 1, 4096, 512)
    assert 2 << 30 < need < 4 << 30  # Flux.1 at 1024 px: a few GiB per step in float32, as measured elsewhere


# ------------------------------------------------------------------ item 13: smaller ones


def test_a_build_keeps_dotfiles_that_only_look_like_its_own(built_copy):
    dead = 2 ** 22 + 17
    users = [".hilo-notes.onnx", ".manifest.json.bak", ".weights-draft.data", f".full-{'0' * 16}.onnx.keep"]
    ours = [f".manifest.json.{dead}.k2j4x_9a.json", f".hilo-{'a' * 16}.onnx.{dead}.zzzzzzzz.onnx"]
    for name in users + ours:
        (built_copy / name).write_text("x")
    build(BuildRequest("tiny-flux", resolution=BUILD_RESOLUTION, out_dir=built_copy), progress=quiet)
    assert all((built_copy / name).exists() for name in users)
    assert not any((built_copy / name).exists() for name in ours)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_with_nan_or_inf_are_named(tmp_path, value):
    from conftest import tiny_flux

    model = tiny_flux(in_channels=16, guidance=True)
    with torch.no_grad():
        model.proj_out.weight[0, 0] = value
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ExportError, match=r"weight proj_out.weight holds NaN or infinite values.*fix the checkpoint"):
        build(BuildRequest(str(tmp_path / "m"), buckets="s", resolution=(64, 48), text_len=8, out_dir=tmp_path / "e"),
              progress=quiet)


def test_weights_beyond_float16_are_named(tmp_path):
    from conftest import tiny_flux

    model = tiny_flux(in_channels=16, guidance=True)
    with torch.no_grad():
        model.proj_out.weight[0, 0] = 1e6
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ExportError, match=r"proj_out.weight .* beyond float16's range"):
        build(BuildRequest(str(tmp_path / "m"), buckets="s", resolution=(64, 48), text_len=8, precision="fp16",
                           out_dir=tmp_path / "e"), progress=quiet)

"""Training checkpoints passed to the scripts load without running pickled code."""

import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from hilo_export.reference import model as ref

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_checkpoint_with_pickled_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"ema": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ref.CheckpointError, match="loads safely"):
        ref.load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(ref.CheckpointError):
        script("evaluate_reference").load_model(str(tmp_path / "evil.pt"))
    assert not (tmp_path / "pwned").exists()


def test_a_training_checkpoint_round_trips(tmp_path):
    model = ref.new_model()
    rng = np.random.default_rng(0)
    torch.save({"model": model.state_dict(), "ema": model.state_dict(), "step": 3, "history": [[1, 0.5]],
                "rng": rng.bit_generator.state, "noise": torch.Generator().get_state(),
                "args": {"out": str(tmp_path), "steps": 3}}, tmp_path / "ok.pt")
    state = ref.load_checkpoint(tmp_path / "ok.pt")
    assert state["step"] == 3 and state["rng"] == rng.bit_generator.state
    loaded, decoder = script("evaluate_reference").load_model(str(tmp_path / "ok.pt"))
    assert decoder is None  # a checkpoint without ema_decoder: the transformer alone
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_ema_models_take_the_checkpoints_ema_decoder():
    model, decoder = ref.new_model(), ref.Decoder()
    with torch.no_grad():
        decoder.net[-1].weight.fill_(0.5)
    loaded, loaded_decoder = ref.ema_models({"ema": model.state_dict(), "ema_decoder": decoder.state_dict()})
    assert not loaded.training and not loaded_decoder.training
    assert torch.equal(loaded_decoder.net[-1].weight, decoder.net[-1].weight)


def test_probe_checkpoint_reports_both_conditions_per_family(tmp_path, monkeypatch, capsys):
    model = ref.new_model()
    torch.nn.init.normal_(model.proj_out.weight, std=0.02)  # a fresh model's output is zero: every selection identical
    torch.save({"ema": model.state_dict(), "ema_decoder": ref.Decoder().state_dict(), "step": 7}, tmp_path / "c.pt")
    monkeypatch.setattr("sys.argv", ["probe_checkpoint", str(tmp_path / "c.pt"), "--size", "128", "--per-family", "1",
                                     "--steps", "1", "--dilation", "0"])
    script("probe_checkpoint").main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("step 7, 128 px, 1 steps, dilation 0")
    assert [line.split()[0] for line in lines[1:]] == ["all", "grating", "plaid", "lattice", "lines"]
    assert all(re.search(r"model over fill [+-]\d.*context cost [+-]\d", line) for line in lines[1:]), lines

"""scripts/gpu_check.py runs on a CPU with a tiny model, with diffusers' Flux and with the plain-torch one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("standin", [False, True])
def test_gpu_check_runs_tiny_on_the_cpu(tmp_path, standin):
    out = tmp_path / "check.json"
    command = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--tiny", "--rounds", "2", "--warmup", "1",
               "--out", str(out), *(["--standin"] if standin else [])]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["implementation"] == ("flux_standin" if standin else "diffusers")
    assert [b["name"] for b in report["buckets"]] == ["s", "m", "l", "full"] and report["rounds"] == 2
    sequences = [b["sequence"] for b in report["buckets"]]
    assert sequences == sorted(sequences) and sequences[-1] == 16 * 16  # 256 px of 16-px tokens
    assert all(b["step_ms_median"] > 0 for b in report["buckets"])
    assert report["cuda_graphs"] is False and report["peak_memory_gib"] is None  # no GPU here


def test_the_gpu_check_needs_only_torch_and_numpy():
    """What gpu_check imports from hilo_export loads no diffusers, Pillow, ONNX, ml_dtypes or safetensors."""
    code = ("import sys, hilo_export.folder.backends.torch, hilo_export.model.engine, hilo_export.model.adapters, "
            "hilo_export.planning.buckets, hilo_export.planning.plan; "
            "print(sorted(m for m in ('diffusers', 'PIL', 'onnx', 'onnxruntime', 'ml_dtypes', 'safetensors', 'jsonschema', "
            "'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

"""The C++ manifest/bucket library (plugins/cpp) against the Python runtime's answers.

The library is built with CMake (or the compiler directly when CMake is absent) into a
temporary folder; its test driver reads a golden file written here from the Python runtime
and planner for the shared ``built`` folder, and reports every mismatch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CPP = Path(__file__).resolve().parents[2] / "plugins" / "cpp"
SOURCES = ["src/json.cpp", "src/manifest.cpp", "tests/manifest_check.cpp"]


def _compiler() -> str | None:
    return next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)


@pytest.fixture(scope="module")
def cpp_build(tmp_path_factory):
    """(driver executable, CMake's configure output or None when built without CMake)."""
    out = tmp_path_factory.mktemp("cpp-build")
    if shutil.which("cmake") and (shutil.which("make") or shutil.which("ninja")):
        configure = _run(["cmake", "-S", str(CPP), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release",
                          "-DCMAKE_CXX_FLAGS_RELEASE=-O1"])
        _run(["cmake", "--build", str(out), "--target", "hilo_manifest_check", "--parallel", "2"])
        return out / "hilo_manifest_check", configure.stdout + configure.stderr
    compiler = _compiler()
    if compiler is None:
        pytest.skip("no C++ compiler (c++, g++ or clang++) and no cmake on this machine: the C++ library cannot be built")
    exe = out / "hilo_manifest_check"
    _run([compiler, "-std=c++17", "-O1", "-I", str(CPP / "include"), *[str(CPP / s) for s in SOURCES], "-o", str(exe)])
    return exe, None


def _run(command: list[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _golden(folder: Path) -> dict:
    """What the Python side says for this folder: table, bucket choices, real plans, errors."""
    from hilo_export.folder import read_manifest
    from hilo_export.planning import parse_buckets
    from hilo_export.planning.plan import mandatory_tokens
    from hilo_export.runtime import HiLoRuntime

    manifest = read_manifest(folder)
    runtime = HiLoRuntime.load(folder, verify=False)
    table = parse_buckets(manifest["buckets_spec"])
    width, height = runtime.resolution
    n_tokens = runtime.grid[0] * runtime.grid[1]
    _, _, n_lowfreq = mandatory_tokens(np.zeros((height, width)), runtime.token_size, runtime.config)

    plans = []
    rng = np.random.default_rng(0)
    for size in (0, 16, 48, 96, 128, 160, 192):  # empty mask to most of the image: every bucket
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        mask = np.zeros((height, width), np.uint8)
        mask[:size, : size * width // height] = 255
        plan = runtime.plan(image, mask)
        required, _, _ = mandatory_tokens(mask, runtime.token_size, runtime.config)
        index = [b["name"] for b in manifest["buckets"]].index(plan.bucket)
        plans.append({"bucket": plan.bucket, "bucket_index": index, "keep": plan.keep_indices.tolist(),
                      "mask_tokens": required - n_lowfreq})
    assert {p["bucket"] for p in plans} == {b.name for b in table}, "the masks should reach every bucket"

    s_keep = plans[0]["keep"]
    s_kept = manifest["buckets"][0]["kept"]
    exact = manifest["planner"]["sizing"] == "exact"
    s_min, m_min = (1, s_kept + 1) if exact else (s_kept, manifest["buckets"][1]["kept"])
    assert manifest["buckets"][0]["kept_min"] == s_min and manifest["buckets"][1]["kept_min"] == m_min
    errors = [
        {"call": "check_plan", "bucket_index": len(table), "keep": s_keep, "message": "outside the table"},
        {"call": "check_plan", "bucket_index": -1, "keep": s_keep, "message": "outside the table"},
        # a bucket takes any length in its range (exact sizing; padded: its one length), and none outside it
        {"call": "check_plan", "bucket_index": 0, "keep": list(range(s_kept + 1)),
         "message": f"entries but bucket s keeps {f'1 to {s_kept}' if exact else f'exactly {s_kept}'}"},
        {"call": "check_plan", "bucket_index": 1, "keep": s_keep,
         "message": f"entries but bucket m keeps {f'{m_min} to' if exact else f'exactly {m_min}'}"},
        {"call": "check_plan", "bucket_index": len(table) - 1, "keep": s_keep, "message": f"bucket full keeps exactly {n_tokens}"},
        {"call": "check_plan", "bucket_index": 0, "keep": [s_keep[0], *s_keep[:-1]], "message": "repeats a token"},
        {"call": "check_plan", "bucket_index": 0, "keep": [*s_keep[:-1], n_tokens], "message": "outside the token grid"},
        {"call": "check_plan", "bucket_index": 0, "keep": [-1, *s_keep[1:]], "message": "outside the token grid"},
        {"call": "bucket", "name": "xl", "message": "no bucket named 'xl'"},
        {"call": "bucket_for_kept", "kept": 0, "message": "no bucket keeps 0 tokens"},
        {"call": "bucket_for_kept", "kept": n_tokens - 1, "message": f"no bucket keeps {n_tokens - 1} tokens"},
        *([] if exact else [{"call": "bucket_for_kept", "kept": s_kept - 1, "message": f"no bucket keeps {s_kept - 1} tokens"}]),
        {"call": "engine_path", "name": "s", "message": "writes no engine file"},  # an ORT build
    ]
    return {
        "folder": str(folder),
        "n_tokens": n_tokens,
        "batch": manifest["batch"],
        "table": [
            {**{k: b[k] for k in ("name", "fraction", "capacity", "n_lowfreq", "kept", "kept_min", "graph", "inputs")},
             "profile": manifest["graphs"][b["graph"]]["engine"]["profiles"].index(b["name"])}
            for b in manifest["buckets"]
        ],
        "plans": plans,
        "errors": errors,
    }


@pytest.mark.parametrize("folder", ["built", "built_exact"])
def test_cpp_matches_python_runtime(cpp_build, folder, request, tmp_path):
    built = request.getfixturevalue(folder)
    exe, _ = cpp_build
    golden = _golden(built)
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(golden))
    result = _run([str(exe), str(path)], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    n_checks = int(result.stdout.split()[0])
    # every plan and every error case was checked (bucket choice is the planner model's, not C++'s)
    assert n_checks >= len(golden["plans"]) + len(golden["errors"])


def test_cmake_says_whether_tensorrt_is_built(cpp_build):
    _, configure = cpp_build
    if configure is None:
        pytest.skip("built without CMake (cmake or make missing): no configure output to check")
    enabled = "hilo: TensorRT runner ENABLED" in configure
    skipped = "hilo: TensorRT runner SKIPPED: " in configure
    assert enabled != skipped, configure  # exactly one clear status line
    if skipped and not any(Path(p, "NvInfer.h").exists() for p in ("/usr/include", "/usr/include/x86_64-linux-gnu")):
        assert "NvInfer.h not found (set -DTENSORRT_ROOT=" in configure


def _broken(built: Path, tmp_path: Path, change) -> Path:
    folder = tmp_path / "broken"
    folder.mkdir()
    data = json.loads((built / "manifest.json").read_text())
    text = change(data)
    (folder / "manifest.json").write_text(text if isinstance(text, str) else json.dumps(data))
    return folder


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: '{"schema_version": 1, "grid": [12, 20],', "is not valid JSON (invalid JSON at line 1"),
        (lambda d: '{"schema_version": 1,\n "grid": [12, 20],}', "invalid JSON at line 2, column 19: expected a quoted key"),
        (lambda d: d.update(schema_version=1), "has manifest schema 1, this reader reads schema 2"),
        (lambda d: d["buckets"][1].pop("capacity"), "manifest.buckets[1].capacity is missing"),
        (lambda d: d["buckets"][0].update(kept=-3), "manifest.buckets[0].kept must be positive"),
        (lambda d: d["buckets"][1].pop("kept_min"), "manifest.buckets[1].kept_min is missing"),
        (lambda d: d["buckets"][0].update(kept_min=d["buckets"][0]["kept"] + 1), "manifest.buckets[0].kept_min exceeds kept"),
        (lambda d: d["buckets"].pop(), "must end with the full bucket"),
        (lambda d: d.update(grid=[12]), "manifest.grid must be [height, width]"),
        (lambda d: d["buckets"][0]["inputs"][0].update(shape=[1, "k_kept"]), "must be a static size"),
        (lambda d: d["graphs"]["hilo"]["engine"].update(profiles=["m", "l"]), "has no optimization profile in graph hilo"),
    ],
)
def test_cpp_rejects_broken_manifests(cpp_build, built, tmp_path, change, message):
    exe, _ = cpp_build
    folder = _broken(built, tmp_path, change)
    result = _run([str(exe), "--load", str(folder)], check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "rebuild" in result.stderr  # every message names the fix


def test_cpp_reports_a_missing_manifest(cpp_build, tmp_path):
    exe, _ = cpp_build
    result = _run([str(exe), "--load", str(tmp_path)], check=False)
    assert result.returncode == 2
    assert "holds no manifest.json: build it first (hilo-export build" in result.stderr


def test_cpp_reads_what_python_json_writes(cpp_build, built, tmp_path):
    """Non-finite floats (NaN, Infinity), escapes and non-ASCII text, any key order, indentation."""
    exe, _ = cpp_build
    data = json.loads((built / "manifest.json").read_text())
    data["model"]["config"]["odd"] = [float("nan"), float("-inf"), "café \u2603 \"q\"\n", 10**30]
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(dict(reversed(data.items())), indent=1, ensure_ascii=True))
    result = _run([str(exe), "--load", str(folder)], check=False)
    assert result.returncode == 0, result.stderr
    assert "3 full capacity 240 kept 240 graph full profile 0" in result.stdout

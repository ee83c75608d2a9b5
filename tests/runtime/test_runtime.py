import json
import threading

import numpy as np
import pytest
import torch
from conftest import BUILD_RESOLUTION, built_step_inputs, textured_image

from hilo_export import HiLoTransformer
from hilo_export.folder import ManifestError
from hilo_export.model import load_model
from hilo_export.runtime import HiLoRuntime, RuntimeInputError

WIDTH, HEIGHT = BUILD_RESOLUTION
H, W = HEIGHT // 16, WIDTH // 16


def image():
    return np.asarray(textured_image(H * 2, W * 2))  # 16-px tokens: twice the 8-px test grid


def mask_for(fraction: float) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[: int(HEIGHT * fraction), :] = True
    return mask




@pytest.fixture(scope="module")
def runtime(built):
    return HiLoRuntime.load(built)


@pytest.fixture(scope="module")
def reference():
    return HiLoTransformer(load_model("tiny-flux").model)


@pytest.mark.parametrize("fraction, bucket", [(0.0, "s"), (0.3, "m"), (0.6, "l"), (1.0, "full")])
def test_runtime_matches_torch_on_every_bucket(runtime, reference, fraction, bucket):
    plan = runtime.plan(image(), mask_for(fraction))
    assert plan.bucket == bucket
    inputs = built_step_inputs()
    fill = torch.randn(1, H * W, 16)
    for given_fill in (fill, None):
        out = runtime(**inputs, plan=plan, fill=given_fill)
        with torch.no_grad():
            expected = reference(**inputs, plan=plan, fill=given_fill).sample
        assert out.shape == expected.shape
        assert (out - expected).abs().max() / expected.abs().max() <= 1e-4


def test_exact_plans_of_one_bucket_run_at_their_own_lengths(built_exact, reference):
    """Two masks in bucket m with different lengths: one engine serves both, each at its own k_kept."""
    runtime = HiLoRuntime.load(built_exact)
    inputs = built_step_inputs()
    lengths = set()
    for rows in (4, 5):
        mask = np.zeros((HEIGHT, WIDTH), bool)
        mask[: rows * 16, : WIDTH // 2] = True
        plan = runtime.plan(image(), mask)
        bucket = runtime.buckets[plan.bucket]
        assert plan.bucket == "m" and bucket["kept_min"] <= len(plan.keep_indices) < bucket["kept"]
        lengths.add(plan.length)
        out = runtime(**inputs, plan=plan)
        with torch.no_grad():
            expected = reference(**inputs, plan=plan).sample
        assert (out - expected).abs().max() / expected.abs().max() <= 1e-4
    assert len(lengths) == 2


def test_a_fixed_k_session_cannot_serve_exact_plans(built_exact):
    from hilo_export.folder.backends.ort import OrtBackend

    fixed = HiLoRuntime.load(built_exact, backend=OrtBackend(fix_k=True))
    with pytest.raises(RuntimeInputError, match="build with --sizing padded"):
        fixed(**built_step_inputs(), plan=fixed.plan(image(), mask_for(0.3)))


def test_runtime_is_safe_from_several_threads(runtime, built):
    plans = [runtime.plan(image(), mask_for(f)) for f in (0.0, 0.3, 0.6, 1.0)]
    serial = [runtime(**built_step_inputs(i), plan=p) for i, p in enumerate(plans)]
    fresh = HiLoRuntime.load(built)  # its engines are first loaded by the threads, concurrently
    results = [None] * len(plans)

    def work(i):
        for _ in range(3):
            results[i] = fresh(**built_step_inputs(i), plan=plans[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(plans))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        assert torch.equal(got, want)


def test_runtime_input_errors(runtime):
    with pytest.raises(RuntimeInputError, match="built for 320x192"):
        runtime.plan(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), bool))
    from hilo_export import plan_tokens

    foreign = plan_tokens(image(), mask_for(0.0), buckets="s=0.1")
    with pytest.raises(RuntimeInputError, match="not made with this folder's settings"):
        runtime(**built_step_inputs(), plan=foreign)
    plan = runtime.plan(image(), mask_for(0.0))
    bad = dict(built_step_inputs(), encoder_hidden_states=torch.zeros(1, 9, 32))
    with pytest.raises(RuntimeInputError, match="encoder_hidden_states has shape"):
        runtime(**bad, plan=plan)
    with pytest.raises(RuntimeInputError, match="missing inputs"):
        runtime(**{k: v for k, v in built_step_inputs().items() if k != "guidance"}, plan=plan)


def test_tampered_missing_and_stale_folders_are_refused(built_copy):
    manifest = json.loads((built_copy / "manifest.json").read_text())
    onnx_file = built_copy / manifest["graphs"]["hilo"]["files"][0]["path"]

    data = bytearray(onnx_file.read_bytes())
    data[-1] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="changed since it was built"):
        HiLoRuntime.load(built_copy)

    onnx_file.unlink()
    with pytest.raises(ManifestError, match="is missing"):
        HiLoRuntime.load(built_copy)

    manifest["schema_version"] = 0
    (built_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="schema"):
        HiLoRuntime.load(built_copy)

    (built_copy / "manifest.json").unlink()
    with pytest.raises(ManifestError, match="build it first"):
        HiLoRuntime.load(built_copy)


def test_an_edited_manifest_is_refused(built_copy):
    manifest = json.loads((built_copy / "manifest.json").read_text())
    manifest["buckets"][0]["kept"] += 1
    (built_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="edited since it was built"):
        HiLoRuntime.load(built_copy)


def test_planning_needs_no_engine_backend(built):
    from hilo_export.folder import BackendError, read_manifest

    manifest = read_manifest(built)
    manifest["backend"] = {"name": "trt", "version": "10.7", "device": "NVIDIA H100 sm_90"}
    runtime = HiLoRuntime(built, manifest)
    plan = runtime.plan(image(), mask_for(0.0))  # fine without TensorRT
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match="TensorRT is not installed"):
            runtime(**built_step_inputs(), plan=plan)

from pathlib import Path

import numpy as np
import pytest

from hilo_export.folder.backends import BackendError, Profile, get_backend, trt

SHAPES = {"hidden_states": [1, 240, 16], "keep_indices": [1, "k_kept"], "img_ids": [240, 3]}


def test_profile_shapes_fix_the_kept_axis():
    shapes = trt.profile_shapes(SHAPES, Profile("s", 71))
    assert shapes["keep_indices"] == ((1, 71), (1, 71), (1, 71))
    assert shapes["hidden_states"] == ((1, 240, 16),) * 3
    with pytest.raises(BackendError, match="dynamic axis other than k_kept"):
        trt.profile_shapes({"x": [1, "batch"]}, Profile("s", 3))


def test_profile_shapes_span_an_exact_bucket():
    shapes = trt.profile_shapes(SHAPES, Profile("m", 143, 72, 112))
    assert shapes["keep_indices"] == ((1, 72), (1, 112), (1, 143))
    assert shapes["img_ids"] == ((240, 3),) * 3  # only k_kept varies
    with pytest.raises(BackendError, match="not ordered"):
        trt.profile_shapes(SHAPES, Profile("m", 143, 150, 143))


def test_profile_of_a_manifest_bucket():
    entry = {"name": "m", "profile": {"min": 72, "opt": 112, "max": 143}}
    assert Profile.of(entry) == Profile("m", 143, 72, 112)
    assert Profile.of(entry).shape_range == (72, 112, 143)


def test_build_settings_have_one_profile_per_bucket():
    settings = trt.build_settings(SHAPES, [Profile("s", 71), Profile("m", 143)], "fp16")
    assert settings["strongly_typed"] and settings["precision"] == "fp16"
    assert [p["bucket"] for p in settings["profiles"]] == ["s", "m"]
    assert settings["profiles"][1]["shapes"]["keep_indices"] == [[1, 143]] * 3
    with pytest.raises(BackendError, match="unknown precision"):
        trt.build_settings(SHAPES, [], "int4")


def test_trt_backend_says_what_is_missing():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match="TensorRT is not installed"):
            get_backend("trt")
    else:
        pytest.skip("TensorRT is installed here: the missing-TensorRT message cannot be shown")


def test_unknown_backend():
    with pytest.raises(BackendError, match="use ort"):
        get_backend("tvm")


def test_ort_runner_shares_one_session_or_fixes_k(built):
    from hilo_export.folder import read_manifest
    from hilo_export.folder.backends.ort import OrtBackend

    manifest = read_manifest(built)
    path = built / manifest["graphs"]["hilo"]["files"][0]["path"]
    profiles = [Profile(b["name"], b["kept"]) for b in manifest["buckets"] if b["graph"] == "hilo"]
    shared = OrtBackend(fix_k=False).load(path, [], profiles)
    fixed = OrtBackend(fix_k=True).load(path, [], profiles)
    bucket = manifest["buckets"][1]
    feeds = {
        v["name"]: (np.arange(bucket["kept"])[None] if v["name"] == "keep_indices" else np.ones(v["shape"], v["dtype"]))
        for v in bucket["inputs"]
    }
    a, b = shared.run("m", feeds), fixed.run("m", feeds)
    assert np.allclose(a["output"], b["output"], atol=1e-5)
    assert len(shared._sessions) == 1 and len(fixed._sessions) == 2  # first profile at load, then m


def test_ort_sessions_of_both_graphs_share_one_copy_of_the_weights(built):
    import onnx

    from hilo_export.folder import read_manifest
    from hilo_export.folder.backends.ort import OrtBackend

    manifest = read_manifest(built)
    bucket = next(b for b in manifest["buckets"] if b["graph"] == "hilo")
    feeds = {
        v["name"]: (np.arange(bucket["kept"])[None] if v["name"] == "keep_indices" else np.full(v["shape"], 0.5, v["dtype"]))
        for v in bucket["inputs"]
    }
    outputs, backends = {}, {}
    for share in (True, False):
        backend = backends[share] = OrtBackend(share_weights=share)
        runners = {}
        for kind, graph in manifest["graphs"].items():
            profiles = [Profile(b["name"], b["kept"]) for b in manifest["buckets"] if b["graph"] == kind]
            runners[kind] = backend.load(built / graph["files"][0]["path"], [], profiles)
        outputs[share] = runners["hilo"].run(bucket["name"], feeds)["output"]
    # every external initializer of either graph is one mapped value, however many graphs use it
    external = set()
    for graph in manifest["graphs"].values():
        proto = onnx.load(str(built / graph["files"][0]["path"]), load_external_data=False)
        external |= {(tuple((e.key, e.value) for e in t.external_data)) for t in proto.graph.initializer
                     if t.data_location == onnx.TensorProto.EXTERNAL}
    assert external and len(backends[True]._shared._values) == len(external)
    assert len(backends[True]._shared._maps) == 1  # one mapping of the one weights file
    assert backends[False]._shared is None
    np.testing.assert_allclose(outputs[True], outputs[False], rtol=1e-5, atol=1e-5)


def test_trt_tensor_types_map_to_torch_without_tensorrt():
    """The TensorRT runner makes its outputs as torch tensors of the engine's types (by name: no numpy type for bf16)."""
    import torch

    class FakeType:
        def __init__(self, name):
            self.name = name

        def __str__(self):
            return f"DataType.{self.name}"

    assert trt.torch_dtype(None, FakeType("BF16")) == torch.bfloat16
    assert trt.torch_dtype(None, FakeType("HALF")) == torch.float16
    assert trt.torch_dtype(None, FakeType("BOOL")) == torch.bool  # use_fill
    with pytest.raises(BackendError, match="FP8"):
        trt.torch_dtype(None, FakeType("FP8"))


def test_the_torch_backend_needs_the_model_code():
    from hilo_export.folder.backends.torch import TorchBackend

    assert get_backend("torch").name == "torch"
    with pytest.raises(BackendError, match="HiLoRuntime.load"):
        TorchBackend().load(Path("g.onnx"), [], [Profile("s", 3)])
    with pytest.raises(BackendError, match="--backend torch"):
        TorchBackend().build(Path("g.onnx"), [Profile("s", 3)], "fp32", Path("."), "0" * 64)

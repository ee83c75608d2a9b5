"""fp16 and bf16 graphs: built on any machine, checked against float32 torch, run or refused clearly."""

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from hilo_export.cli import main
from hilo_export.export import BuildRequest, build
from hilo_export.folder import BackendError, read_manifest
from hilo_export.runtime import HiLoRuntime

RESOLUTION = (64, 48)  # 4 x 3 tokens of 16 px: a build in seconds


@pytest.fixture(scope="module", params=["fp16", "bf16"])
def half_build(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    messages = []
    build(BuildRequest("tiny-flux", buckets="s", resolution=RESOLUTION, precision=request.param, out_dir=folder),
          progress=messages.append)
    return request.param, folder, messages


def test_half_precision_builds_on_a_cpu_with_a_note_and_a_recorded_check(half_build):
    precision, folder, messages = half_build
    assert any(f"{precision} graphs are meant for a GPU" in m for m in messages)
    m = read_manifest(folder)
    assert m["precision"] == precision
    for graph in m["graphs"].values():
        check = graph["check"]
        # measured against float32 torch on the same inputs; the tolerance is in the manifest
        assert check["reference"] == "torch float32"
        assert check["runner"] == ("onnx.reference" if precision == "bf16" else "onnxruntime CPU")
        assert 0 < max(check["relative_error"].values()) <= check["tolerance"]
        assert check["tensorrt"] == {"version": "10.1", "rejected": []}


def test_half_graphs_hold_half_weights_no_float64_and_float32_islands(half_build):
    precision, folder, _ = half_build
    m = read_manifest(folder)
    half = {"fp16": onnx.TensorProto.FLOAT16, "bf16": onnx.TensorProto.BFLOAT16}[precision]
    weights = (folder / m["weights"]["files"][0]["path"]).stat().st_size
    for graph in m["graphs"].values():
        path = folder / graph["files"][0]["path"]
        onnx.checker.check_model(str(path), full_check=True)
        proto = onnx.load(str(path), load_external_data=False)
        external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        assert external and all(t.data_type == half for t in external)
        inferred = onnx.shape_inference.infer_shapes(proto).graph
        typed = [*inferred.value_info, *inferred.input, *inferred.output]
        assert all(v.type.tensor_type.elem_type != onnx.TensorProto.DOUBLE for v in typed)
        assert all(t.data_type != onnx.TensorProto.DOUBLE for t in proto.graph.initializer)
        producers = {o: n for n in proto.graph.node for o in n.output}
        types = {v.name: v.type.tensor_type.elem_type for v in typed}
        for node in proto.graph.node:
            if node.op_type in ("LayerNormalization", "Softmax"):
                # computed in float32: fed by a Cast to float32, its result cast back to half
                assert types[node.input[0]] == onnx.TensorProto.FLOAT and producers[node.input[0]].op_type == "Cast"
                assert types[node.output[0]] == onnx.TensorProto.FLOAT
        for tensor in external:  # 2 bytes per weight, inside the shared file
            spans = {e.key: int(e.value) for e in tensor.external_data if e.key != "location"}
            assert spans["length"] == 2 * int(np.prod(tensor.dims)) and spans["offset"] + spans["length"] <= weights


def test_runtime_runs_fp16_on_the_cpu_and_refuses_bf16_clearly(half_build):
    precision, folder, _ = half_build
    runtime = HiLoRuntime.load(folder)
    image = np.zeros((RESOLUTION[1], RESOLUTION[0], 3), np.uint8)
    plan = runtime.plan(image, np.zeros(image.shape[:2], bool))
    bucket = runtime.buckets[plan.bucket]
    g = torch.Generator().manual_seed(0)
    inputs = {v["name"]: torch.randn(v["shape"], generator=g) for v in bucket["inputs"]
              if v["name"] not in ("keep_indices", "fill", "use_fill")}
    if precision == "fp16":
        out = runtime(plan=plan, **inputs)  # the output comes back in the caller's dtype
        assert out.dtype == torch.float32 and out.shape == (1, 12, 16) and torch.isfinite(out).all()
        half = runtime(plan=plan, **{**inputs, "hidden_states": inputs["hidden_states"].half()})
        assert half.dtype == torch.float16 and torch.equal(half, out.half())
    else:
        with pytest.raises(BackendError, match="bf16 folder needs a GPU.*--precision fp16 or fp32"):
            runtime(plan=plan, **inputs)


def test_validate_trt_check_accepts_every_precision(half_build, built):
    for folder in (half_build[1], built):
        result = CliRunner().invoke(main, ["validate", str(folder), "--trt-check"])
        assert result.exit_code == 0, result.output
        assert result.output.count("accepted by TensorRT 10.1") == 2

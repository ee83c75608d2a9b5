"""Linear weights stored transposed in the shared file, and the graphs rewired to read them as stored."""

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch

from hilo_export.export.external import Placement, linear_weights, plan_weights, read_transposed
from hilo_export.folder.manifest import read_manifest
from hilo_export.model import load_model
from hilo_export.model.weights import StateDictWeights


def test_no_graph_transposes_a_weight_and_matmuls_read_the_file(built):
    """A Transpose of a weight is what ONNX Runtime folds into a private copy per session."""
    m = read_manifest(built)
    for kind, graph in m["graphs"].items():
        proto = onnx.load(str(built / graph["files"][0]["path"]), load_external_data=False).graph
        external = {t.name for t in proto.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
        readers = [n for n in proto.node if set(n.input) & external]
        assert readers, kind
        assert not [n.name for n in readers if n.op_type == "Transpose"], kind
        assert sum(n.op_type == "MatMul" for n in readers) >= 10, kind


def test_the_file_holds_linear_weights_transposed(built):
    m = read_manifest(built)
    model = load_model("tiny-flux").model
    proto = onnx.load(str(built / m["graphs"]["full"]["files"][0]["path"]), load_external_data=False).graph
    data = np.memmap(built / m["weights"]["files"][0]["path"], dtype=np.uint8, mode="r")
    tensors = {t.name: {e.key: e.value for e in t.external_data} for t in proto.initializer if t.external_data}
    checked = 0
    for key in sorted(linear_weights(model)):
        where = tensors.get(f"model.{key}")
        if where is None:
            continue
        offset, length = int(where["offset"]), int(where["length"])
        stored = data[offset:offset + length].view(np.float32)
        expected = model.state_dict()[key].t().contiguous().numpy().reshape(-1)
        np.testing.assert_array_equal(stored, expected)
        checked += 1
    assert checked >= 10


def test_linear_weights_are_the_nn_linear_weights_only():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Conv1d(4, 4, 1))
    assert linear_weights(model) == {"0.weight"}


def test_plan_transposes_only_named_2d_tensors(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 2))
    planned = plan_weights(StateDictWeights(model), torch.float32, tmp_path / "w.data", frozenset({"0.weight", "0.bias"}))
    assert planned.layout["0.weight"] == Placement(4096, 60, (3, 5), torch.float32, True)  # after 0.bias
    assert planned.layout["0.bias"].shape == (5,) and not planned.layout["0.bias"].transposed  # 1-D: nothing to transpose
    assert planned.layout["1.weight"].shape == (2, 5) and not planned.layout["1.weight"].transposed


def _graph_reading(weight_shape, build):
    """A one-input graph whose weight initializer (traced layout ``weight_shape``) is read by ``build``'s nodes."""
    x = ir.Value(name="x", shape=ir.Shape([2, weight_shape[1]]), type=ir.TensorType(ir.DataType.FLOAT))
    w = ir.Value(name="w", shape=ir.Shape(list(weight_shape)), type=ir.TensorType(ir.DataType.FLOAT))
    nodes, out = build(x, w)
    graph = ir.Graph([x], [out], nodes=nodes, initializers=[w], opset_imports={"": 18})
    return graph, w


def _run(graph, weight: np.ndarray, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    graph.initializers["w"].const_value = ir.tensor(weight, name="w")
    proto = ir.serde.serialize_model(ir.Model(graph, ir_version=9))
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("reader", ["matmul", "gemm", "other"])
def test_read_transposed_keeps_the_result(reader):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3)).astype(np.float32)  # [out, in], as nn.Linear traces it
    x = rng.standard_normal((2, 3)).astype(np.float32)

    def build(x_value, w_value):
        if reader == "matmul":
            t = ir.node("Transpose", [w_value], attributes={"perm": [1, 0]})
            mm = ir.node("MatMul", [x_value, t.outputs[0]])
            return [t, mm], mm.outputs[0]
        if reader == "gemm":
            gemm = ir.node("Gemm", [x_value, w_value], attributes={"transB": 1})
            return [gemm], gemm.outputs[0]
        # a reader that is neither (here Mul of the weight's first row): must still see [out, in]
        row = ir.node("Slice", [w_value, ir.node("Constant", [], attributes={"value_ints": [0]}).outputs[0],
                                ir.node("Constant", [], attributes={"value_ints": [1]}).outputs[0]])
        mul = ir.node("Mul", [x_value, row.outputs[0]])
        consts = [row.inputs[1].producer(), row.inputs[2].producer()]
        return [*consts, row, mul], mul.outputs[0]

    graph, w = _graph_reading((4, 3), build)
    expected = _run(graph, weight, x)
    w.shape = ir.Shape([3, 4])
    read_transposed(graph, w)
    ops = [n.op_type for n in graph]
    if reader == "matmul":
        assert "Transpose" not in ops
    elif reader == "gemm":
        assert next(n for n in graph if n.op_type == "Gemm").attributes["transB"].as_int() == 0
    else:
        assert ops.count("Transpose") == 1
    np.testing.assert_allclose(_run(graph, weight.T.copy(), x), expected, rtol=1e-6)

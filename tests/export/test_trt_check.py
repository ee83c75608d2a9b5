"""The static TensorRT check rejects what TensorRT's ONNX parser rejects, naming the node."""

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from hilo_export.export.errors import ExportError
from hilo_export.export.trt_check import check_graph, support_table


def _float(name, dtype=TensorProto.FLOAT, shape=(2, 3)):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_the_table_names_its_source_and_covers_the_graph_ops():
    table = support_table()
    assert table["tensorrt"] == "10.1" and "onnx-tensorrt" in table["source"]["url"] and table["source"]["commit"]
    ops = table["operators"]
    assert ops["SequenceAt"] == {"supported": False} and "BFLOAT16" in ops["MatMul"]["types"]
    with pytest.raises(ExportError, match="no TensorRT 7.0 operator table"):
        support_table("7.0")


def test_a_clean_graph_passes(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g", [_float("x")], [_float("y")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), tmp_path / "g.onnx")
    assert check_graph(tmp_path / "g.onnx") == []


@pytest.mark.parametrize("case, reason", [
    ("unsupported op", "does not support SequenceAt"),
    ("float64", "is DOUBLE"),
    ("cast to float64", "casts to DOUBLE"),
    ("dynamic axes", "input axes ('axes') must be an initializer or Constant"),
    ("layernorm statistics", "outputs beyond the first"),
    ("other domain", "domain 'acme' is not ONNX's"),
    ("hilo op without function", "has no local function"),
    ("old opset", "opset 8 is outside"),
])
def test_rejections_name_the_node_and_the_reason(tmp_path, case, reason):
    x = _float("x")
    opset = 20
    inputs, outputs, nodes = [x], [_float("y")], []
    if case == "unsupported op":
        nodes = [helper.make_node("SplitToSequence", ["x"], ["s"], name="split"), helper.make_node("SequenceAt", ["s", "i"], ["y"], name="bad")]
        inputs.append(helper.make_tensor_value_info("i", TensorProto.INT64, []))
    elif case == "float64":
        inputs = [_float("x", TensorProto.DOUBLE)]
        outputs = [_float("y", TensorProto.DOUBLE)]
        nodes = [helper.make_node("Relu", ["x"], ["y"], name="bad")]
    elif case == "cast to float64":
        outputs = [_float("y", TensorProto.DOUBLE)]
        nodes = [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.DOUBLE, name="bad")]
    elif case == "dynamic axes":
        inputs.append(helper.make_tensor_value_info("axes", TensorProto.INT64, [1]))
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
        nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["y"], name="bad")]
    elif case == "layernorm statistics":
        inputs += [_float("scale", shape=(3,))]
        outputs += [helper.make_tensor_value_info("mean", TensorProto.FLOAT, None)]
        nodes = [helper.make_node("LayerNormalization", ["x", "scale"], ["y", "mean"], name="bad")]
    elif case == "other domain":
        nodes = [helper.make_node("Magic", ["x"], ["y"], domain="acme", name="bad")]
    elif case == "hilo op without function":
        nodes = [helper.make_node("TokenGather", ["x", "x"], ["y"], domain="hilo", name="bad")]
    elif case == "old opset":
        opset = 8
        nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    imports = [helper.make_opsetid("", opset), helper.make_opsetid("hilo", 1)]
    if case == "other domain":
        imports.append(helper.make_opsetid("acme", 1))
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=imports), path)
    found = [str(r) for r in check_graph(path)]
    assert any(reason in f for f in found), found
    if case != "old opset":
        assert all("'bad'" in f for f in found if reason in f)


def test_validate_trt_check_exits_3_naming_the_node(tmp_path, built_copy, monkeypatch):
    from hilo_export.cli import main
    from hilo_export.export import trt_check

    table = support_table()
    table["operators"]["MatMul"] = {"supported": False}
    monkeypatch.setattr(trt_check, "support_table", lambda version="10.1": table)
    result = CliRunner().invoke(main, ["validate", str(built_copy), "--trt-check"])
    assert result.exit_code == 3
    assert "does not support MatMul" in result.output and "node 'node_MatMul" in result.output

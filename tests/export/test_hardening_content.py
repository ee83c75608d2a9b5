"""A re-signed folder (digests recomputed, as anyone can) with wrong content gets one clear error naming
the file from every reader: load, validate, --trt-check and triton."""

import os

import onnx
import pytest
from click.testing import CliRunner
from conftest import built_step_inputs, resign, textured_image

from hilo_export.cli import main
from hilo_export.errors import HiLoError
from hilo_export.folder.manifest import ManifestError, read_manifest
from hilo_export.runtime import HiLoRuntime


def graph_path(folder, kind="hilo"):
    return folder / read_manifest(folder)["graphs"][kind]["files"][0]["path"]


def set_location(location):
    """Point the hilo graph's first external tensor at ``location`` (the graph file is rewritten)."""
    def change(folder):
        path = graph_path(folder)
        proto = onnx.load(str(path), load_external_data=False)
        tensor = next(t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location(folder) if callable(location) else location
        path.write_bytes(proto.SerializeToString())
        resign(folder)
    return change


def fifo_location(folder):
    os.mkfifo(folder / "pipe.data")
    return "pipe.data"


def unlisted_location(folder):
    (folder / "other.data").write_bytes(b"\0" * (1 << 20))
    return "other.data"


LOCATIONS = {
    "parent": set_location("../weights.data"),
    "absolute": set_location("/etc/hostname"),
    "fifo": set_location(fifo_location),
    "not in the manifest": set_location(unlisted_location),
}


def garbage(folder):
    graph_path(folder).write_bytes(os.urandom(4096))
    resign(folder)


def swapped(folder):
    hilo, full = graph_path(folder, "hilo"), graph_path(folder, "full")
    a, b = hilo.read_bytes(), full.read_bytes()
    hilo.write_bytes(b)
    full.write_bytes(a)
    resign(folder)


def manifest_change(change):
    return lambda folder: resign(folder, change)


def bogus_dtype(data):
    data["graphs"]["full"]["inputs"][0]["dtype"] = "float99"


def huge_batch(data):
    data["batch"] = 10 ** 9


def other_batch(data):
    data["batch"] = 3


def trt_without_engines(data):
    data["backend"]["name"] = "trt"


CONTENT = {
    "garbage graph": garbage,
    "swapped graphs": swapped,
    "bogus dtype": manifest_change(bogus_dtype),
    "huge batch": manifest_change(huge_batch),
    "other batch": manifest_change(other_batch),
    "trt without engines": manifest_change(trt_without_engines),
}

COMMANDS = [["validate", "{}"], ["validate", "{}", "--trt-check"], ["triton", "{}", "--out", "{}/../repo", "--backend", "ort"]]


@pytest.mark.parametrize("case", sorted(LOCATIONS) + sorted(CONTENT))
def test_wrong_content_is_one_clear_error_everywhere(built_copy, case):
    (LOCATIONS | CONTENT)[case](built_copy)
    for verify in (True, False):
        with pytest.raises(ManifestError, match="rebuild the folder"):
            HiLoRuntime.load(built_copy, verify=verify)
    for command in COMMANDS:
        result = CliRunner().invoke(main, [part.format(built_copy) for part in command])
        assert result.exit_code == 2, (command, result.output)
        assert "rebuild the folder" in result.output and "Traceback" not in result.output, result.output
    assert not (built_copy.parent / "repo").exists()


def test_an_unknown_op_domain_is_named_by_file(built_copy):
    path = graph_path(built_copy)
    proto = onnx.load(str(path), load_external_data=False)
    node = next(n for n in proto.graph.node if n.domain == "")
    node.domain = "com.example.unknown"
    proto.opset_import.append(onnx.helper.make_opsetid("com.example.unknown", 1))
    path.write_bytes(proto.SerializeToString())
    resign(built_copy)
    runtime = HiLoRuntime.load(built_copy)
    image = textured_image(24, 40)
    with pytest.raises(HiLoError, match=f"cannot load {path}.*rebuild the folder"):
        runtime(plan=runtime.plan(image, image[..., 0] > 250), **built_step_inputs())
    result = CliRunner().invoke(main, ["validate", str(built_copy), "--trt-check"])
    assert result.exit_code == 3 and "com.example.unknown" in result.output, result.output  # a check result, named
    result = CliRunner().invoke(main, ["validate", str(built_copy)])
    assert result.exit_code == 2 and path.name in result.output and "Traceback" not in result.output, result.output

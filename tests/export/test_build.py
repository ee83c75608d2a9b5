
import numpy as np
import onnx
import pytest
from conftest import BUILD_RESOLUTION, BUILT_PLANNER

from hilo_export.export import BuildError, BuildRequest, build, cache, parse_resolution, workspace
from hilo_export.export import builder as build_module
from hilo_export.folder.manifest import SCHEMA_VERSION, read_manifest, sha256_file
from hilo_export.model import PLUGIN_ATTRIBUTES, ModelError, load_model
from hilo_export.planning import PlannerConfig


def quiet(_):
    pass


def test_manifest_describes_the_build(built):
    m = read_manifest(built)
    assert m["schema_version"] == SCHEMA_VERSION
    assert m["model"]["name"] == "tiny-flux" and m["model"]["weights_sha256"] == load_model("tiny-flux").weights_sha256
    assert m["resolution"] == list(BUILD_RESOLUTION) and m["token_size"] == 16 and m["grid"] == [12, 20]
    assert m["planner"]["lowfreq_factor"] == 16 and m["backend"]["name"] == "ort"
    assert {"torch", "onnx", "onnxruntime", "diffusers"} <= set(m["tools"])
    names = [b["name"] for b in m["buckets"]]
    assert names == ["s", "m", "l", "full"]
    assert m["planner"]["sizing"] == "padded"
    for b in m["buckets"]:  # padded sizing: one static length per bucket
        assert b["profile"] == {"min": b["kept"], "opt": b["kept"], "max": b["kept"]} and b["kept_min"] == b["kept"]
        assert b["capacity"] == b["kept"] + b["n_lowfreq"]
        for f in b["files"]:
            assert sha256_file(built / f["path"]) == f["sha256"]
        shapes = {v["name"]: v["shape"] for v in b["inputs"]}
        assert shapes["keep_indices"] == [1, b["kept"]] and shapes["hidden_states"] == [1, 240, 16]
        assert {v["name"] for v in b["outputs"]} == ({"output"} if b["name"] == "full" else {"output", "lowfreq_output"})
    assert all(v["dtype"] for b in m["buckets"] for v in b["inputs"] + b["outputs"])
    for graph in m["graphs"].values():
        assert max(graph["check"]["relative_error"].values()) <= graph["check"]["tolerance"]


def test_exact_sizing_builds_bucket_ranges(built, built_exact):
    m, padded = read_manifest(built_exact), read_manifest(built)
    assert m["planner"]["sizing"] == "exact"
    # the same graphs: sizing changes the plans, the profiles and the manifest, not the export
    assert [g["files"][0]["sha256"] for g in m["graphs"].values()] == [g["files"][0]["sha256"] for g in padded["graphs"].values()]
    previous = 0
    for b in m["buckets"]:  # the buckets' k_kept ranges tile 1..N without overlap
        low = b["kept"] if b["name"] == "full" else previous + 1
        assert b["kept_min"] == low and b["profile"]["min"] == low and b["profile"]["max"] == b["kept"]
        assert low <= b["profile"]["opt"] <= b["kept"]
        previous = b["kept"]


def test_onnx_graph_has_hilo_ops_functions_and_one_dynamic_axis(built):
    m = read_manifest(built)
    model = onnx.load(str(built / m["graphs"]["hilo"]["files"][0]["path"]))
    onnx.checker.check_model(model, full_check=True)
    hilo_nodes = [n for n in model.graph.node if n.domain == "hilo"]
    assert {n.op_type for n in hilo_nodes} == {"TokenGather", "TokenScatter"}
    for node in hilo_nodes:
        assert {a.name: a.s.decode() for a in node.attribute} == PLUGIN_ATTRIBUTES
    assert {(f.domain, f.name) for f in model.functions} == {("hilo", "TokenGather"), ("hilo", "TokenScatter")}
    dynamic = {
        (i.name, d.dim_param) for i in model.graph.input for d in i.type.tensor_type.shape.dim if not d.HasField("dim_value")
    }
    assert dynamic == {("keep_indices", "k_kept")}
    # no float64 anywhere: not in tensors, not as a Cast target
    assert all(t.data_type != onnx.TensorProto.DOUBLE for t in model.graph.initializer)
    assert all(
        not (n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.DOUBLE for a in n.attribute))
        for n in model.graph.node
    )
    assert all(v.type.tensor_type.elem_type != onnx.TensorProto.DOUBLE for v in model.graph.value_info)


def test_second_build_rebuilds_nothing(built_copy, monkeypatch):
    before = {p.name: p.stat().st_mtime_ns for p in built_copy.iterdir()}
    monkeypatch.setattr(build_module, "export_graph", lambda *a, **k: pytest.fail("a cached graph was exported again"))
    messages = []
    build(BuildRequest("tiny-flux", resolution=BUILD_RESOLUTION, out_dir=built_copy, config=PlannerConfig(**BUILT_PLANNER)), progress=messages.append)
    assert sum("up to date" in m for m in messages) == 5  # the weights, two graphs, the ONNX planner and the folder
    after = {p.name: p.stat().st_mtime_ns for p in built_copy.iterdir()}
    def unchanged(files):
        return {k: v for k, v in files.items() if k != workspace.LOCK}
    assert unchanged(after) == unchanged(before)  # the manifest too


def test_a_changed_bucket_table_reuses_the_graphs(built_copy, monkeypatch):
    monkeypatch.setattr(build_module, "export_graph", lambda *a, **k: pytest.fail("the graphs do not depend on buckets"))
    old_planner = read_manifest(built_copy)["planner_model"]["files"][0]["path"]
    build(BuildRequest("tiny-flux", buckets="s=0.2,m", resolution=BUILD_RESOLUTION, out_dir=built_copy), progress=quiet)
    m = read_manifest(built_copy)
    assert [b["name"] for b in m["buckets"]] == ["s", "m", "full"] and m["buckets"][0]["fraction"] == 0.2
    # the ONNX planner holds the bucket table: a new one replaces the old file
    new_planner = m["planner_model"]["files"][0]["path"]
    assert new_planner != old_planner and (built_copy / new_planner).exists() and not (built_copy / old_planner).exists()


def test_interrupted_build_leaves_the_previous_build_intact(built_copy, monkeypatch):
    manifest = (built_copy / "manifest.json").read_text()

    def interrupted(graph, path, weights, progress):
        path.write_bytes(b"half an onnx file")  # what a crash mid-write could leave behind
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "export_graph", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(BuildRequest("tiny-flux", resolution=(160, 96), out_dir=built_copy), progress=quiet)
    assert (built_copy / "manifest.json").read_text() == manifest
    from hilo_export.runtime import HiLoRuntime

    HiLoRuntime.load(built_copy)  # every file of the old build still verifies


def test_new_resolution_rebuilds_and_removes_stale_files(built_copy):
    old = {g["files"][0]["path"] for g in read_manifest(built_copy)["graphs"].values()}
    weights = read_manifest(built_copy)["weights"]
    (built_copy / "notes.txt").write_text("not ours")
    build(BuildRequest("tiny-flux", resolution=(160, 96), out_dir=built_copy), progress=quiet)
    m = read_manifest(built_copy)
    new = {g["files"][0]["path"] for g in m["graphs"].values()}
    assert m["grid"] == [6, 10] and not old & new
    assert m["weights"] == weights  # the weights do not depend on the resolution: kept
    assert not any((built_copy / name).exists() for name in old)
    assert (built_copy / "notes.txt").exists()


def test_graphs_share_one_weights_file_by_reference(built):
    """The weights are on disk once, in ONNX external data that both graphs name; the checker passes by path."""
    m = read_manifest(built)
    weights = m["weights"]["files"][0]["path"]
    assert weights.startswith("weights-") and weights.endswith(".data")
    for graph in m["graphs"].values():
        onnx_file, *data = [f["path"] for f in graph["files"]]
        assert data == [weights]
        onnx.checker.check_model(str(built / onnx_file), full_check=True)
        proto = onnx.load(str(built / onnx_file), load_external_data=False)
        external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        assert len(external) > 10
        assert {e.value for t in external for e in t.external_data if e.key == "location"} == {weights}
        size = (built / weights).stat().st_size
        spans = [{e.key: e.value for e in t.external_data} for t in external]
        assert all(int(x["offset"]) % 4096 == 0 and int(x["offset"]) + int(x["length"]) <= size for x in spans)
        # inside the file only small constants (the optimizer folds e.g. transposes of tiny weights)
        assert max(t.ByteSize() for t in proto.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL) < 2**16
    # every tensor of the model, once
    n_params = sum(t.numel() * 4 for t in load_model("tiny-flux").model.state_dict().values())
    assert n_params <= (built / weights).stat().st_size < n_params + 4096 * 200


def test_a_lost_graph_is_exported_again_and_the_weights_are_reused(built_copy):
    m = read_manifest(built_copy)
    weights = built_copy / m["weights"]["files"][0]["path"]
    written = weights.stat().st_mtime_ns
    hilo = m["graphs"]["hilo"]["files"]
    (built_copy / hilo[0]["path"]).unlink()
    messages = []
    build(BuildRequest("tiny-flux", resolution=BUILD_RESOLUTION, out_dir=built_copy, config=PlannerConfig(**BUILT_PLANNER)), progress=messages.append)
    assert read_manifest(built_copy)["graphs"]["hilo"]["files"] == hilo  # the same bytes again
    assert weights.stat().st_mtime_ns == written and any("weights: up to date" in x for x in messages)
    assert not [p for p in built_copy.iterdir() if p.name.startswith(".") and p.name != workspace.LOCK]  # no leftovers


def test_a_folder_served_by_triton_still_rebuilds(built_copy, tmp_path):
    """The Triton repository hard-links the weights file; onnx.checker refuses external data with
    several links ("hardlink attack"), which made every later re-export of the folder fail."""
    from hilo_export.serving.repository import write_repository

    write_repository(built_copy, tmp_path / "repo")
    m = read_manifest(built_copy)
    assert (built_copy / m["weights"]["files"][0]["path"]).stat().st_nlink > 1
    (built_copy / m["graphs"]["hilo"]["files"][0]["path"]).unlink()
    build(BuildRequest("tiny-flux", resolution=BUILD_RESOLUTION, out_dir=built_copy, config=PlannerConfig(**BUILT_PLANNER)), progress=quiet)
    assert read_manifest(built_copy)["graphs"]["hilo"]["files"] == m["graphs"]["hilo"]["files"]


@pytest.mark.parametrize(
    "request_kwargs, message",
    [
        (dict(resolution=(100, 64)), "multiples of the token size 16"),
        (dict(precision="fp8"), "unknown precision"),
        (dict(buckets="huge"), "unknown bucket"),
        (dict(model="no/such-model"), "not a built-in"),
        (dict(token_size=0), "token size must be at least 1"),
        (dict(text_len=0), "text length must be at least 1"),
    ],
)
def test_bad_requests_fail_before_writing(tmp_path, request_kwargs, message):
    kwargs = {"model": "tiny-flux", "resolution": (64, 64), "out_dir": tmp_path / "e", **request_kwargs}
    with pytest.raises(Exception, match=message):
        build(BuildRequest(**kwargs), progress=quiet)
    assert not (tmp_path / "e" / "manifest.json").exists()


def test_resolution_parsing():
    assert parse_resolution("1024x768") == (1024, 768)
    with pytest.raises(BuildError, match="WIDTHxHEIGHT"):
        parse_resolution("1024")


def test_engine_key_covers_what_defines_an_engine():
    from hilo_export.folder import Profile

    base = ("onnx-sha", [Profile("s", 10)], "fp32", "trt", "10.7", "sm_90")
    key = cache.engine_key(*base)
    variants = [
        ("other-sha", *base[1:]),
        (base[0], [Profile("s", 11)], *base[2:]),
        (*base[:2], "fp16", *base[3:]),
        (*base[:3], "ort", *base[4:]),
        (*base[:4], "10.8", base[5]),
        (*base[:5], "sm_80"),
    ]
    assert len({key, *(cache.engine_key(*v) for v in variants)}) == 1 + len(variants)


def test_a_model_family_without_adapter_is_a_clear_error(tmp_path):
    from diffusers import SD3Transformer2DModel

    SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=16, out_channels=4,
    ).save_pretrained(tmp_path / "sd3")
    with pytest.raises(ModelError, match="no HiLo adapter for SD3Transformer2DModel"):
        build(BuildRequest(str(tmp_path / "sd3"), resolution=(64, 64), out_dir=tmp_path / "e"), progress=quiet)


def test_bucket_fractions_survive_the_manifest_exactly(built_copy):
    from hilo_export.runtime import HiLoRuntime

    build(BuildRequest("tiny-flux", buckets="s=0.2000001,m", resolution=BUILD_RESOLUTION, out_dir=built_copy), progress=quiet)
    runtime = HiLoRuntime.load(built_copy)
    mask = np.zeros(BUILD_RESOLUTION[::-1], bool)
    plan = runtime.plan(np.zeros((*BUILD_RESOLUTION[::-1], 3), np.uint8), mask)
    assert plan.capacity == runtime.buckets["s"]["capacity"]

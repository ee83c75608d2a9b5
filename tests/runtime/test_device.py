"""Tensors stay where the engine runs; every consumer of the graph files gets the runtime's output."""

import contextlib
import json

import numpy as np
import pytest
import torch
from conftest import BUILD_RESOLUTION, BUILT_PLANNER, built_step_inputs, textured_image

from hilo_export.folder import read_manifest
from hilo_export.folder.backends import BackendError
from hilo_export.folder.backends.torch import TorchRunner, write_safetensors
from hilo_export.planning.buckets import choose_bucket, parse_buckets, rooms
from hilo_export.planning.plan import LowFreqLayout
from hilo_export.runtime import EngineTransformer, HiLoRuntime

WIDTH, HEIGHT = BUILD_RESOLUTION
H, W = HEIGHT // 16, WIDTH // 16


def _mask(rows: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[:rows] = True
    return mask


def _image() -> np.ndarray:
    return np.asarray(textured_image(H * 2, W * 2))


@contextlib.contextmanager
def no_numpy(monkeypatch):
    """Every way a torch tensor becomes numpy (or numpy a tensor) raises while inside."""
    def refuse(*args, **kwargs):
        raise AssertionError("a numpy round trip inside a runtime call")

    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "numpy", refuse)
        patch.setattr(torch.Tensor, "__array__", refuse)
        patch.setattr(torch, "from_numpy", refuse)
        yield


@pytest.fixture(scope="module")
def runtime(built):
    return HiLoRuntime.load(built)


def test_the_guard_catches_a_round_trip(monkeypatch):
    from hilo_export.folder.dtypes import from_numpy, to_numpy

    with no_numpy(monkeypatch):  # the check can fail: what the old runtime did is refused
        with pytest.raises(AssertionError, match="numpy round trip"):
            to_numpy(torch.zeros(2))
        with pytest.raises(AssertionError, match="numpy round trip"):
            from_numpy(np.zeros(2, np.float32))
        with pytest.raises(AssertionError, match="numpy round trip"):
            np.asarray(torch.zeros(2))


@pytest.mark.parametrize("rows, dtype", [(40, torch.float32), (40, torch.bfloat16), (HEIGHT, torch.float64)])
def test_torch_in_torch_out_without_numpy(runtime, monkeypatch, rows, dtype):
    plan = runtime.plan(_image(), _mask(rows))
    inputs = {k: v.to(dtype) if k == "hidden_states" else v for k, v in built_step_inputs().items()}
    expected = runtime(plan=plan, **{k: v.numpy() if v.dtype != torch.bfloat16 else v.float().numpy()
                                     for k, v in inputs.items()})  # the numpy path keeps working
    fill = torch.randn(1, H * W, 16)
    with no_numpy(monkeypatch):
        out = runtime(plan=plan, **inputs)
        filled = runtime(plan=plan, fill=fill, **inputs)
        raw = runtime.run_bucket(plan.bucket, {**{k: v.float() for k, v in inputs.items()},
                                               **_engine_extras(runtime, plan, fill=None)})
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.device == inputs["hidden_states"].device
    assert filled.dtype == dtype and isinstance(raw["output"], torch.Tensor)
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-5
    assert torch.allclose(out.float(), expected.float(), atol=tolerance * expected.abs().max(), rtol=0)
    if plan.bucket != "full":
        dropped = torch.ones(H * W, dtype=torch.bool)
        dropped[plan.keep_indices] = False
        assert torch.equal(filled[0, dropped].float(), fill[0, dropped].to(dtype).float())  # use_fill: the fill given
        assert not torch.equal(out[0, dropped].float(), filled[0, dropped].float())  # without: the low-frequency one


def _engine_extras(runtime, plan, fill):
    bucket = runtime.buckets[plan.bucket]
    extras = {"keep_indices": plan.keep_indices[None], "fill": torch.zeros(1, H * W, 16) if fill is None else fill}
    if any(v["name"] == "use_fill" for v in bucket["inputs"]):
        extras["use_fill"] = torch.tensor([fill is not None])
    return extras


def test_engine_transformer_reports_the_engines_device(runtime):
    from hilo_export.model import load_model

    stock = load_model("tiny-flux").model
    wrapper = EngineTransformer(runtime, stock)
    assert wrapper.device == runtime.device == torch.device("cpu")


def test_a_consumer_of_the_onnx_files_gets_the_runtime_output(built, runtime):
    """Planner and graph run straight from their .onnx files with onnxruntime (what Triton and C++
    do): same bucket, same keep list, same output, dropped tokens included."""
    import onnxruntime as ort

    manifest = read_manifest(built)
    planner = ort.InferenceSession(str(built / manifest["planner_model"]["files"][0]["path"]))
    sessions = {kind: ort.InferenceSession(str(built / g["files"][0]["path"])) for kind, g in manifest["graphs"].items()}
    inputs = {k: v.numpy() for k, v in built_step_inputs(seed=3).items()}
    layout = LowFreqLayout(manifest["planner"]["lowfreq_factor"], (H, W))
    seen = set()
    for rows in (0, 40, 100, 150, HEIGHT):
        image, mask = _image(), _mask(rows)
        bucket_index, keep = planner.run(["bucket", "keep_indices"],
                                         {"image": image, "mask": mask.astype(np.uint8) * 255})
        bucket = manifest["buckets"][int(bucket_index[0])]
        plan = runtime.plan(image, mask)
        assert bucket["name"] == plan.bucket and np.array_equal(keep, plan.keep_indices.numpy())
        feeds = {**inputs, "keep_indices": keep[None], "fill": np.zeros((1, H * W, 16), np.float32)}
        names = [i.name for i in sessions[bucket["graph"]].get_inputs()]
        if "use_fill" in names:
            feeds["use_fill"] = np.array([False])
        got = sessions[bucket["graph"]].run(None, feeds)
        expected = runtime(plan=plan, **inputs).numpy()
        np.testing.assert_allclose(got[0], expected, rtol=0, atol=1e-6)
        if plan.bucket != "full":  # the graph itself gave dropped tokens their block's low-frequency prediction
            dropped = np.ones(H * W, bool)
            dropped[keep] = False
            block = layout.block_of_token().numpy()
            assert dropped.any() and np.abs(got[0][0, dropped]).min() > 0
            np.testing.assert_array_equal(got[0][0, dropped], got[1][0, block[dropped]])
        seen.add(plan.bucket)
    assert seen == {b["name"] for b in manifest["buckets"]}


def test_bucket_choice_has_one_table(built):
    """The manifest's kept, the Python rule and the ONNX planner's constants are one table."""
    manifest = read_manifest(built)
    table = parse_buckets(manifest["buckets_spec"])
    n_lowfreq = manifest["buckets"][0]["n_lowfreq"]
    room = rooms(table, H * W, n_lowfreq)
    assert room == [b["kept"] for b in manifest["buckets"]]
    for n_mask in range(H * W + 1):
        index = choose_bucket(room, n_mask)
        assert room[index] >= n_mask and (index == 0 or room[index - 1] < n_mask)


def test_torch_backend_serves_the_folder_beside_ort(built_copy, runtime, monkeypatch):
    from hilo_export.export import BuildRequest, build
    from hilo_export.planning import PlannerConfig

    # the planner of the ort folder it is compared with, so one plan serves both
    folder = build(BuildRequest("tiny-flux", resolution=BUILD_RESOLUTION, out_dir=built_copy, backend="torch",
                                config=PlannerConfig(**BUILT_PLANNER)), progress=lambda _: None)
    manifest = read_manifest(folder)
    assert manifest["backend"]["name"] == "torch"
    engine_files = {f["path"] for g in manifest["graphs"].values() for f in g["engine"]["files"]}
    assert len(engine_files) == 3  # one spec per graph, one weights file they share
    served = HiLoRuntime.load(folder)
    assert served.device == torch.device("cpu")
    inputs = built_step_inputs(seed=5)
    for rows in (40, HEIGHT):
        plan = served.plan(_image(), _mask(rows))
        with no_numpy(monkeypatch):
            out = served(plan=plan, **inputs)
        expected = runtime(plan=plan, **inputs)
        assert out.dtype == torch.float32 and (out - expected).abs().max() <= 1e-4 * expected.abs().max()
    # Triton serves the same folder's ONNX graphs with onnxruntime
    from hilo_export.serving.repository import parse_config, write_repository

    repo = write_repository(folder, built_copy.parent / "repo", progress=lambda _: None)
    assert parse_config(repo / "dit_hilo" / "config.pbtxt").backend == "onnxruntime"


def test_torch_runner_refuses_cuda_graphs_without_a_gpu():
    module = torch.nn.Identity()
    module.input_names, module.output_names = ["x"], ["y"]
    runner = TorchRunner(module, "cpu")
    assert torch.equal(runner.run("s", {"x": torch.ones(2)})["y"], torch.ones(2))
    assert runner.run("s", {"x": np.ones(2, np.float32)})["y"].dtype == np.float32  # numpy in, numpy out
    with pytest.raises(BackendError, match="CUDA graphs need a CUDA device"):
        TorchRunner(module, "cpu", cuda_graphs=True)


def test_safetensors_written_one_tensor_at_a_time_read_back(tmp_path):
    from safetensors.torch import load_file

    state = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.randn(2)}

    class Source:
        def entries(self):
            return {k: (v.dtype, tuple(v.shape)) for k, v in state.items()}

        def tensor(self, key):
            return state[key]

    write_safetensors(tmp_path / "w.safetensors", Source(), torch.bfloat16)
    back = load_file(tmp_path / "w.safetensors")
    assert back["a"].dtype == torch.bfloat16 and torch.equal(back["a"], state["a"].to(torch.bfloat16))
    assert torch.equal(back["b"], state["b"])  # integers keep their type
    data = (tmp_path / "w.safetensors").read_bytes()
    size = int.from_bytes(data[:8], "little")
    assert size % 8 == 0 and json.loads(data[8:8 + size])["c"]["shape"] == [2]  # the data starts aligned


def test_a_folder_whose_graphs_do_not_fill_is_refused(built, monkeypatch):
    """Graphs from before use_fill scatter over zeros: serving them would silently change the output."""
    from hilo_export.folder import ManifestError

    runtime = HiLoRuntime.load(built)
    plan = runtime.plan(_image(), _mask(40))
    bucket = runtime.buckets[plan.bucket]
    monkeypatch.setitem(bucket, "inputs", [v for v in bucket["inputs"] if v["name"] != "use_fill"])
    with pytest.raises(ManifestError, match="older hilo-export.*rebuild"):
        runtime(plan=plan, **built_step_inputs())

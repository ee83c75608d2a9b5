"""The Triton model repository: configs valid under Triton's schema, and the routing of
hilo_edit_step (router.py, and model.py against a stand-in for the Python backend) giving
what HiLoRuntime gives, on the ONNX Runtime engines of the built tiny-flux folder."""

import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import BUILD_RESOLUTION, built_step_inputs, textured_image

from hilo_export.cli import main
from hilo_export.folder.manifest import file_entry, read_manifest, write_manifest
from hilo_export.runtime import HiLoRuntime
from hilo_export.serving.repository import (
    TritonRepoError,
    parse_config,
    validate_repository,
    write_repository,
)
from hilo_export.serving.router import RequestError, Router

WIDTH, HEIGHT = BUILD_RESOLUTION
H, W = HEIGHT // 16, WIDTH // 16
MODELS = ["dit_full", "dit_hilo", "hilo_edit_step", "planner"]


@pytest.fixture(scope="module")
def served(built, tmp_path_factory):
    """A copy of the built folder for this module: a repository hard-links its source's files,
    and onnx refuses external data with several links, which later tests of ``built`` read."""
    return Path(shutil.copytree(built, tmp_path_factory.mktemp("served") / "engines"))


@pytest.fixture(scope="module")
def repo(served, tmp_path_factory):
    return write_repository(served, tmp_path_factory.mktemp("triton") / "repo", progress=lambda _: None)


@pytest.fixture(scope="module")
def run_model(repo):
    """Model calls as Triton would make them, on the repository's own model files."""
    import onnxruntime as ort

    sessions = {name: ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
                for name in ("planner", "dit_hilo", "dit_full")}
    calls = []

    def run(name, feeds, output_names):
        calls.append(name)
        return dict(zip(output_names, sessions[name].run(output_names, feeds)))

    run.calls = calls
    return run


@pytest.fixture(scope="module")
def runtime(served):
    return HiLoRuntime.load(served)


def image():
    return textured_image(H * 2, W * 2)  # 16-px tokens: twice the 8-px test grid


def mask_for(fraction):
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[: int(HEIGHT * fraction)] = 255
    return mask


def step_inputs(seed=0):
    return {k: v.numpy() for k, v in built_step_inputs(seed).items()}


# ------------------------------------------------------------------ repository and configs


def test_repository_layout_and_configs(repo, served):
    assert sorted(p.name for p in repo.iterdir()) == MODELS
    configs = {name: parse_config(repo / name / "config.pbtxt") for name in MODELS}
    from tritonclient.grpc.model_config_pb2 import ModelInstanceGroup

    assert configs["planner"].backend == "onnxruntime"
    assert ModelInstanceGroup.Kind.Name(configs["planner"].instance_group[0].kind) == "KIND_CPU"
    assert [i.name for i in configs["planner"].input] == ["image", "mask"]
    dit_inputs = {i.name: i for i in configs["dit_hilo"].input}
    assert configs["dit_hilo"].backend == "onnxruntime" and list(dit_inputs["keep_indices"].dims) == [1, -1]
    # the graph fills dropped tokens itself; the router only says whether it sent a fill
    from tritonclient.grpc.model_config_pb2 import DataType

    assert DataType.Name(dit_inputs["use_fill"].data_type) == "TYPE_BOOL" and list(dit_inputs["use_fill"].dims) == [1]
    assert "use_fill" not in {i.name for i in configs["dit_full"].input}
    step = configs["hilo_edit_step"]
    assert step.backend == "python" and step.max_batch_size == 0
    fill = next(i for i in step.input if i.name == "fill")
    assert fill.optional and not any(i.optional for i in step.input if i.name != "fill")
    assert [o.name for o in step.output] == ["output", "bucket"]
    # the BLS folder carries its router: the same code this test suite runs
    from hilo_export.serving import router

    assert (repo / "hilo_edit_step" / "1" / "router.py").read_text() == Path(router.__file__).read_text()
    assert validate_repository(repo, read_manifest(served), "ort") == MODELS


@pytest.mark.parametrize(
    "model, edit, message",
    [
        ("dit_hilo", lambda t: t.replace("dims: [ 1, -1 ]", "dims: [ 1, 64 ]"), "do not match model.onnx"),
        ("planner", lambda t: t.replace("TYPE_UINT8", "TYPE_FP32", 1), "do not match the manifest"),
        ("hilo_edit_step", lambda t: t.replace("optional: true", ""), "do not match the manifest"),
        ("dit_full", lambda t: t.replace("max_batch_size: 0", "max_batch_size: 0\nmax_batch_sizes: 2"), "does not parse"),
        ("planner", lambda t: t.replace("KIND_CPU", "KIND_CPUS"), "does not parse"),
    ],
)
def test_validation_catches_a_broken_config(repo, served, tmp_path, model, edit, message):
    broken = shutil.copytree(repo, tmp_path / "repo")
    config = broken / model / "config.pbtxt"
    config.write_text(edit(config.read_text()))
    with pytest.raises(TritonRepoError, match=message):
        validate_repository(broken, read_manifest(served), "ort")


def test_tensorrt_models_list_every_bucket_profile(built_copy, tmp_path):
    """The trt layout from a manifest with stand-in engine files (TensorRT cannot run here:
    this checks the repository and its configs, not an engine)."""
    manifest = read_manifest(built_copy)
    manifest["backend"] = {"name": "trt", "version": "10.x", "device": "stand-in"}
    for kind, graph in manifest["graphs"].items():
        plan = built_copy / f"{kind}-0000000000000000-stand-in.plan"
        plan.write_bytes(b"not an engine: " + kind.encode())
        graph["engine"]["files"] = [file_entry(plan)]
    write_manifest(built_copy, manifest)
    repo = write_repository(built_copy, tmp_path / "repo", progress=lambda _: None)
    hilo, full = parse_config(repo / "dit_hilo" / "config.pbtxt"), parse_config(repo / "dit_full" / "config.pbtxt")
    assert hilo.platform == "tensorrt_plan" and list(hilo.instance_group[0].profile) == ["0", "1", "2"]  # s, m, l
    assert list(full.instance_group[0].profile) == ["0"]
    assert (repo / "dit_hilo" / "1" / "model.plan").read_bytes() == b"not an engine: hilo"
    config = repo / "dit_hilo" / "config.pbtxt"
    config.write_text(config.read_text().replace('profile: [ "0", "1", "2" ]', 'profile: [ "0" ]'))
    with pytest.raises(TritonRepoError, match="list every one"):
        validate_repository(repo, manifest, "trt")


def test_repository_refusals(served, repo, tmp_path):
    with pytest.raises(TritonRepoError, match="no TensorRT ones"):
        write_repository(served, tmp_path / "trt", backend="trt", progress=lambda _: None)
    with pytest.raises(TritonRepoError, match="--force"):
        write_repository(served, repo, progress=lambda _: None)
    with pytest.raises(TritonRepoError, match="--max-batch"):
        write_repository(served, tmp_path / "neg", max_batch=-1, progress=lambda _: None)
    assert not (tmp_path / "trt").exists() and not (tmp_path / "neg").exists()


def test_triton_command(served, tmp_path):
    out = tmp_path / "repo"
    result = CliRunner().invoke(main, ["triton", str(served), "--out", str(out), "--max-batch", "4"])
    assert result.exit_code == 0, result.output
    step = parse_config(out / "hilo_edit_step" / "config.pbtxt")
    assert step.max_batch_size == 4 and step.HasField("dynamic_batching")
    again = CliRunner().invoke(main, ["triton", str(served), "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    forced = CliRunner().invoke(main, ["triton", str(served), "--out", str(out), "--force"])
    assert forced.exit_code == 0 and parse_config(out / "hilo_edit_step" / "config.pbtxt").max_batch_size == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


# ------------------------------------------------------------------ routing


@pytest.mark.parametrize("fraction, bucket", [(0.0, "s"), (0.3, "m"), (0.6, "l"), (1.0, "full")])
def test_router_gives_what_the_runtime_gives(repo, run_model, runtime, fraction, bucket):
    router = Router.load(repo / "hilo_edit_step" / "1" / "routing.json")
    inputs = step_inputs()
    plan = runtime.plan(image(), mask_for(fraction))
    assert plan.bucket == bucket
    fill = np.random.default_rng(1).standard_normal((1, H * W, 16)).astype(np.float32)
    for given in (fill, None):
        request = {**inputs, "image": image(), "mask": mask_for(fraction)}
        if given is not None:
            request["fill"] = given
        result = router.step(request, run_model)
        expected = runtime(**inputs, plan=plan, fill=given).numpy()
        assert runtime.manifest["buckets"][int(result["bucket"][0])]["name"] == bucket
        np.testing.assert_allclose(result["output"], expected, rtol=0, atol=1e-6 * np.abs(expected).max())


def test_router_rows_are_planned_one_by_one(repo, run_model):
    router = Router.load(repo / "hilo_edit_step" / "1" / "routing.json")
    rows = [{**step_inputs(seed), "image": image(), "mask": mask_for(fraction)} for seed, fraction in ((0, 0.0), (1, 1.0))]
    batched = router.step_rows({name: np.stack([r[name] for r in rows]) for name in rows[0]}, run_model)
    assert batched["bucket"].ravel().tolist() == [0, 3]  # s and full in one call
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(batched["output"][i], router.step(row, run_model)["output"])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.update(image=r["image"][:64]), r"image is uint8 \[64, 320, 3\]; the engines serve uint8 \[192, 320, 3\]"),
        (lambda r: r.update(mask=(r["mask"] > 0).astype(np.uint8)), "multiply it by 255"),
        (lambda r: r.update(mask=r["mask"].astype(bool)), "send uint8"),
        (lambda r: r.pop("timestep"), "missing input 'timestep'"),
        (lambda r: r.update(timestep=r["timestep"].astype(np.float64)), "timestep is float64"),
        (lambda r: r.update(hidden_states=r["hidden_states"][:, :10]), r"hidden_states has shape \[1, 10, 16\]"),
        (lambda r: r.update(extra=np.zeros(1)), "unexpected inputs"),
        (lambda r: r.pop("mask"), "missing input 'mask'"),
    ],
)
def test_router_refuses_bad_requests_saying_what_to_send(repo, run_model, change, message):
    router = Router.load(repo / "hilo_edit_step" / "1" / "routing.json")
    request = {**step_inputs(), "image": image(), "mask": mask_for(0.3)}
    change(request)
    before = len(run_model.calls)
    with pytest.raises(RequestError, match=message):
        router.step(request, run_model)
    assert len(run_model.calls) == before  # refused before any model ran


# ------------------------------------------------------------------ model.py, with a stand-in Python backend


class _Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, np.asarray(array)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class _Error:
    def __init__(self, message):
        self._message = message

    def message(self):
        return self._message


class _Response:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error_value = output_tensors, error

    def has_error(self):
        return self.error_value is not None

    def error(self):
        return self.error_value


def stand_in_backend(run_model):
    """The parts of triton_python_backend_utils that model.py uses, calling models through run_model."""
    pb = types.ModuleType("triton_python_backend_utils")
    pb.TRITONSERVER_MEMORY_CPU = 0
    pb.Tensor = _Tensor
    pb.TritonError = _Error
    pb.TritonModelException = RuntimeError
    pb.PreferredMemory = lambda kind, device=0: (kind, device)

    def response(output_tensors, error=None):
        return _Response(output_tensors, error)

    class InferenceRequest:
        def __init__(self, model_name, requested_output_names, inputs, preferred_memory=None):
            assert preferred_memory == (0, 0)  # results must come back as numpy
            self.model_name, self.outputs, self.inputs = model_name, requested_output_names, inputs

        def exec(self):
            feeds = {t.name(): t.as_numpy() for t in self.inputs}
            outputs = run_model(self.model_name, feeds, self.outputs)
            return _Response([_Tensor(name, outputs[name]) for name in self.outputs])

    def by_name(holder, name):
        tensors = holder.output_tensors if isinstance(holder, _Response) else holder
        return next((t for t in tensors if t.name() == name), None)

    pb.InferenceResponse = response
    pb.InferenceRequest = InferenceRequest
    pb.get_input_tensor_by_name = by_name
    pb.get_output_tensor_by_name = by_name
    return pb


def test_model_py_serves_requests_through_the_router(repo, run_model, monkeypatch):
    from google.protobuf import json_format

    version = repo / "hilo_edit_step" / "1"
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stand_in_backend(run_model))
    monkeypatch.setattr(sys, "path", list(sys.path))  # model.py adds its folder; undone after the test
    monkeypatch.delitem(sys.modules, "router", raising=False)  # model.py must find its own copy
    spec = importlib.util.spec_from_file_location("model", version / "model.py")
    model_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model_module)
    config = json_format.MessageToDict(parse_config(repo / "hilo_edit_step" / "config.pbtxt"), preserving_proto_field_name=True)
    model = model_module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config)})

    good = {**step_inputs(), "image": image(), "mask": mask_for(0.3)}
    bad = {**good, "mask": (mask_for(0.3) > 0).astype(np.uint8)}
    responses = model.execute([[_Tensor(k, v) for k, v in request.items()] for request in (good, bad)])
    router = Router.load(version / "routing.json")
    expected = router.step(good, run_model)
    ok = {t.name(): t.as_numpy() for t in responses[0].output_tensors}
    np.testing.assert_array_equal(ok["output"], expected["output"])
    assert ok["bucket"].tolist() == [1]  # m
    assert responses[1].has_error() and "multiply it by 255" in responses[1].error().message()


# ------------------------------------------------------------------ scripts/triton_client.py, against a stand-in server


def stand_in_http(repo, run_model):
    """tritonclient.http as the client script uses it, answered by router.py on ONNX Runtime."""
    from tritonclient.grpc import model_config_pb2

    router = Router.load(repo / "hilo_edit_step" / "1" / "routing.json")
    config = parse_config(repo / "hilo_edit_step" / "config.pbtxt")
    http = types.ModuleType("tritonclient.http")

    class InferInput:
        def __init__(self, name, shape, datatype):
            self.name, self.shape, self.datatype = name, shape, datatype

        def set_data_from_numpy(self, array):
            assert list(array.shape) == self.shape
            self.data = array

    class Result:
        def __init__(self, outputs):
            self.outputs = outputs

        def as_numpy(self, name):
            return self.outputs[name]

    class InferenceServerClient:
        def __init__(self, url):
            self.url = url

        def is_model_ready(self, name):
            return name == "hilo_edit_step"

        def get_model_metadata(self, name):  # Triton's HTTP metadata: data types without TYPE_
            return {"inputs": [{"name": i.name, "datatype": model_config_pb2.DataType.Name(i.data_type).removeprefix("TYPE_"),
                                "shape": list(i.dims)} for i in config.input]}

        def infer(self, model, inputs, outputs):
            return Result(router.step({i.name: i.data for i in inputs}, run_model))

    http.InferInput, http.InferenceServerClient = InferInput, InferenceServerClient
    http.InferRequestedOutput = lambda name: name
    return http


def test_client_script_against_a_stand_in_server(repo, run_model, served, tmp_path, monkeypatch, capsys):
    import tritonclient
    from PIL import Image

    http = stand_in_http(repo, run_model)
    monkeypatch.setitem(sys.modules, "tritonclient.http", http)
    monkeypatch.setattr(tritonclient, "http", http, raising=False)
    spec = importlib.util.spec_from_file_location("triton_client", Path(__file__).parents[2] / "scripts" / "triton_client.py")
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    Image.fromarray(image()).save(tmp_path / "image.png")
    Image.fromarray(mask_for(0.3)).save(tmp_path / "mask.png")
    out = tmp_path / "output.npy"
    client.main(["--image", str(tmp_path / "image.png"), "--mask", str(tmp_path / "mask.png"), "--random",
                 "--out", str(out), "--check", str(served)])
    printed = capsys.readouterr().out
    assert "bucket index 1" in printed and "HiLoRuntime: bucket m (server: m)" in printed
    assert float(printed.rsplit("max relative difference ", 1)[1].split()[0]) <= 1e-6
    assert np.load(out).shape == (1, H * W, 16)

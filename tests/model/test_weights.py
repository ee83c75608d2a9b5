"""Weights without a materialized model: sharded safetensors read one tensor at a time, meta models."""

import json

import numpy as np
import onnx
import pytest
import torch
from conftest import tiny_flux

from hilo_export.model import ModelError, load_model
from hilo_export.model.loading import load_for_export, weights_sha256
from hilo_export.model.weights import ShardedWeights, check_covers, meta_model


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A tiny Flux saved by diffusers in its sharded layout (several shards and an index)."""
    folder = tmp_path_factory.mktemp("sharded") / "model"
    model = tiny_flux(in_channels=16, guidance=True)
    model.save_pretrained(folder / "transformer", max_shard_size="40KB")
    return folder, model


def test_sharded_folder_reads_every_tensor_by_key(sharded):
    folder, model = sharded
    weights = ShardedWeights(folder / "transformer")
    assert len(weights.files) > 2  # really sharded
    state = model.state_dict()
    assert {k: (v.dtype, tuple(v.shape)) for k, v in state.items()} == weights.entries()
    for key in list(state)[:5]:
        assert torch.equal(weights.tensor(key), state[key])


def test_meta_model_has_shapes_and_no_storage(sharded):
    folder, model = sharded
    meta = meta_model(folder / "transformer")
    assert all(p.device.type == "meta" for p in meta.parameters())
    assert {k: v.shape for k, v in meta.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_export_loading_digest_matches_the_eager_loader(sharded):
    folder, model = sharded
    lean = load_for_export(str(folder))  # a pipeline-style folder: transformer/ inside
    # read one tensor at a time, the digest equals that of the in-memory model the folder was saved from
    assert lean.loaded.weights_sha256 == weights_sha256(model)
    assert lean.loaded.weights_sha256 == load_model(str(folder)).weights_sha256  # validate compares these
    assert lean.eager is not None  # small: checked against eager torch at build time


def test_weights_that_do_not_fit_the_config_are_a_clear_error(sharded, tmp_path):
    folder, _ = sharded
    config = json.loads((folder / "transformer" / "config.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    for path in (folder / "transformer").iterdir():
        (other / path.name).write_bytes(path.read_bytes())
    (other / "config.json").write_text(json.dumps({**config, "num_single_layers": 3}))
    with pytest.raises(ModelError, match="lack .* tensors of the model"):
        check_covers(meta_model(other), ShardedWeights(other), str(other))
    index = json.loads((other / "diffusion_pytorch_model.safetensors.index.json").read_text())
    (other / index["weight_map"]["proj_out.weight"]).unlink()
    with pytest.raises(ModelError, match="is missing"):
        ShardedWeights(other)


def test_a_build_from_shards_streams_the_weights_into_the_shared_file(sharded, tmp_path):
    from hilo_export.export import BuildRequest, build
    from hilo_export.export.external import linear_weights
    from hilo_export.folder import read_manifest

    folder, model = sharded
    out = build(BuildRequest(str(folder), buckets="s", resolution=(64, 48), text_len=8, out_dir=tmp_path / "e"),
                progress=lambda _: None)
    m = read_manifest(out)
    assert m["model"]["source"] == "folder"
    for graph in m["graphs"].values():
        assert max(graph["check"]["relative_error"].values()) <= graph["check"]["tolerance"]
    # the bytes at each external reference are the weight itself (float32 build: unchanged;
    # linear weights transposed, as MatMul reads them)
    proto = onnx.load(str(out / m["graphs"]["full"]["files"][0]["path"]), load_external_data=False)
    data = (out / m["weights"]["files"][0]["path"]).read_bytes()
    state = model.state_dict()
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            where = {e.key: e.value for e in tensor.external_data}
            offset, length = int(where["offset"]), int(where["length"])
            stored = np.frombuffer(data[offset:offset + length], np.float32).reshape(tensor.dims)
            key = tensor.name.removeprefix("model.")
            expected = state[key].t() if key in linear_weights(model) else state[key]
            assert np.array_equal(stored, expected.numpy())

"""A model folder is input: shard names stay in it, its files are plain safetensors, its config builds
the model its weights hold; everything else is one clear error naming the file."""

import json
import os
import shutil
import struct

import pytest
import torch
from click.testing import CliRunner
from conftest import deadline, tiny_flux

from hilo_export.cli import main
from hilo_export.model import ModelError
from hilo_export.model.loading import load_for_export
from hilo_export.model.weights import INDEX_FILE, SINGLE_FILE, ShardedWeights

FIX = "re-save|re-download|copy the whole model folder|restore the model"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    model = tiny_flux(in_channels=16, guidance=True)
    model.save_pretrained(root / "sharded", max_shard_size="40KB")
    model.save_pretrained(root / "single")
    return root, model


@pytest.fixture
def sharded(saved, tmp_path):
    return copied(saved[0] / "sharded", tmp_path / "sharded")


@pytest.fixture
def single(saved, tmp_path):
    return copied(saved[0] / "single", tmp_path / "single")


def copied(source, target):
    return shutil.copytree(source, target)


def set_shard_name(folder, name):
    index = json.loads((folder / INDEX_FILE).read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    for key, value in index["weight_map"].items():
        if value == first:
            index["weight_map"][key] = name
    (folder / INDEX_FILE).write_text(json.dumps(index))
    return folder / first


# ------------------------------------------------------------------ item 1: shard paths


@pytest.mark.parametrize("name", ["../outside.safetensors", "ABSOLUTE", "sub/../../outside.safetensors", ""])
def test_shard_names_outside_the_folder_are_refused(sharded, name):
    outside = sharded.parent / "outside.safetensors"
    name = str(outside) if name == "ABSOLUTE" else name
    shutil.copyfile(set_shard_name(sharded, name), outside)  # a valid shard: it used to be read
    with pytest.raises(ModelError, match="outside its folder"):
        ShardedWeights(sharded)


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "folder"])
@pytest.mark.parametrize("layout", ["sharded", "single", "config"])
def test_shards_and_configs_must_be_regular_files(saved, tmp_path, kind, layout):
    folder = copied(saved[0] / ("single" if layout == "single" else "sharded"), tmp_path / "m")
    if layout == "sharded":
        victim = folder / "bad.safetensors"
        set_shard_name(folder, "bad.safetensors")
    else:
        victim = folder / (SINGLE_FILE if layout == "single" else "config.json")
        victim.unlink()
    if kind == "fifo":
        os.mkfifo(victim)
    elif kind == "folder":
        victim.mkdir()
    else:
        victim.symlink_to(kind)
    with deadline():
        with pytest.raises(ModelError, match="not a regular file"):
            load_for_export(str(folder))
        result = CliRunner().invoke(main, ["build", "--model", str(folder), "--resolution", "64x48", "--text-len", "8",
                                           "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "not a regular file" in result.output, result.output


def test_shards_may_link_to_regular_files_elsewhere(saved, tmp_path):
    """A hub cache snapshot links every file to a blob outside the snapshot folder: defined, and read."""
    folder = tmp_path / "snapshot"
    folder.mkdir()
    for path in (saved[0] / "sharded").iterdir():
        (folder / path.name).symlink_to(path)
    weights = ShardedWeights(folder)
    assert weights.entries() == ShardedWeights(saved[0] / "sharded").entries()


# ------------------------------------------------------------------ item 6: broken safetensors files


def rewrite_header(path, change):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    header, body = change(header, body)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + body)


def tensors(header):
    return [k for k in header if k != "__metadata__"]


def offsets_past_the_end(header, body):
    key = tensors(header)[0]
    header[key]["data_offsets"][1] += 10_000
    return header, body


def overlapping(header, body):
    a, b = sorted(tensors(header), key=lambda k: header[k]["data_offsets"][0])[:2]
    header[b]["data_offsets"] = list(header[a]["data_offsets"])
    return header, body


def unknown_dtype(header, body):
    header[tensors(header)[0]]["dtype"] = "Q9"
    return header, body


BROKEN = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:-100]),
    "empty": lambda p: p.write_bytes(b""),
    "header too large": lambda p: p.write_bytes(struct.pack("<Q", 2 ** 40) + p.read_bytes()[8:]),
    "header negative": lambda p: p.write_bytes(struct.pack("<q", -5) + p.read_bytes()[8:]),
    "bad json": lambda p: p.write_bytes(p.read_bytes()[:8] + b"{" * 40 + p.read_bytes()[48:]),
    "offsets past the end": lambda p: rewrite_header(p, offsets_past_the_end),
    "overlapping": lambda p: rewrite_header(p, overlapping),
    "unknown dtype": lambda p: rewrite_header(p, unknown_dtype),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_a_broken_safetensors_file_is_named(single, breakage):
    path = single / SINGLE_FILE
    BROKEN[breakage](path)
    with pytest.raises(ModelError, match=rf"{path}.*(re-save|re-download)"):
        ShardedWeights(single)


def save_as(model, folder, dtype):
    folder.mkdir()
    from safetensors.torch import save_file

    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / SINGLE_FILE)
    config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    (folder / "config.json").write_text(json.dumps({"_class_name": "FluxTransformer2DModel", **config}))
    return state


def test_an_fp8_checkpoint_is_converted(saved, tmp_path):
    from hilo_export.export import BuildRequest, build
    from hilo_export.folder import read_manifest

    _, model = saved
    state = save_as(model, tmp_path / "fp8", torch.float8_e4m3fn)
    source = load_for_export(str(tmp_path / "fp8"))
    key = "proj_out.bias"
    assert source.weights.entries()[key][0] == torch.float8_e4m3fn
    out = build(BuildRequest(str(tmp_path / "fp8"), buckets="s", resolution=(64, 48), text_len=8,
                             out_dir=tmp_path / "e"), progress=lambda _: None)
    manifest = read_manifest(out)
    assert manifest["graphs"]["full"]["check"]["relative_error"]  # checked against torch on the fp8 values
    data = (out / manifest["weights"]["files"][0]["path"]).read_bytes()
    assert state[key].float().numpy().tobytes() in data


def test_dtypes_that_cannot_be_converted_are_refused_by_name(saved, tmp_path):
    _, model = saved
    save_as(model, tmp_path / "m", torch.float32)
    # F8_E8M0 is a valid safetensors dtype (block scales), not one of weights the exporter converts
    path = tmp_path / "m" / SINGLE_FILE
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    key = sorted(tensors(header), key=lambda k: header[k]["data_offsets"][0])[0]
    begin, end = header[key]["data_offsets"]
    header[key]["dtype"] = "F8_E8M0"
    header[key]["shape"] = [end - begin]
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + n:])
    with pytest.raises(ModelError, match=f"stores tensor {key} as F8_E8M0.*save the weights in bf16"):
        ShardedWeights(tmp_path / "m")


# ------------------------------------------------------------------ item 7: config values


@pytest.mark.parametrize("change", [{"num_layers": -3}, {"num_attention_heads": 0}, {"attention_head_dim": 2.5},
                                    {"axes_dims_rope": [4, -6, 6]}, {"num_single_layers": True}])
def test_config_values_that_build_a_wrong_model_are_refused(single, change):
    config = json.loads((single / "config.json").read_text())
    (single / "config.json").write_text(json.dumps({**config, **change}))
    key = next(iter(change))
    with pytest.raises(ModelError, match=f"{key} is .*restore the model's config.json"):
        load_for_export(str(single))


def test_weights_the_model_does_not_use_are_refused(single):
    """num_layers: 0 is a valid setting, but these weights hold a double block: it would be dropped."""
    config = json.loads((single / "config.json").read_text())
    (single / "config.json").write_text(json.dumps({**config, "num_layers": 0}))
    with pytest.raises(ModelError, match="hold .* tensors the model of config.json does not use, e.g. .*transformer_blocks.0"):
        load_for_export(str(single))

"""A manifest is input: its structure is checked, its paths confined, its folder locked while built."""

import errno
import os
import stat

import pytest
from click.testing import CliRunner
from conftest import BUILD_RESOLUTION, BUILT_PLANNER
from filelock import FileLock

from hilo_export.cli import main
from hilo_export.export import BuildError, BuildRequest, build, workspace
from hilo_export.files import atomic_path
from hilo_export.folder.manifest import DIGEST, ManifestError, read_manifest, write_manifest
from hilo_export.planning import PlannerConfig
from hilo_export.runtime import HiLoRuntime
from hilo_export.serving.repository import TritonRepoError, write_repository


def quiet(_):
    pass


def rewrite(folder, change):
    """Change the manifest and recompute its digest, as anyone can."""
    data = {k: v for k, v in read_manifest(folder).items() if k != DIGEST}
    change(data)
    write_manifest(folder, data)


def set_graph_path(name):
    def change(data):
        data["graphs"]["full"]["files"][0]["path"] = name
    return change


# ------------------------------------------------------------------ item 1: paths stay in the folder


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/hostname", "sub/../../x.onnx"])
def test_paths_outside_the_folder_are_refused(built_copy, name):
    rewrite(built_copy, set_graph_path(name))
    with pytest.raises(ManifestError, match="rebuild the folder"):
        HiLoRuntime.load(built_copy)


@pytest.mark.parametrize("target", ["/dev/zero", "outside"])
def test_links_to_device_files_or_out_of_the_folder_are_refused(built_copy, tmp_path, target):
    """/dev/zero used to make load, validate and build hang; a link out of the folder was read."""
    if target == "outside":
        target = tmp_path / "outside.onnx"
        target.write_bytes(b"x")
    (built_copy / "link.onnx").symlink_to(target)
    rewrite(built_copy, set_graph_path("link.onnx"))
    with pytest.raises(ManifestError, match="not a regular file|links outside"):
        HiLoRuntime.load(built_copy)
    with pytest.raises(ManifestError, match="not a regular file|links outside"):
        write_repository(built_copy, tmp_path / "repo", progress=quiet)
    assert not (tmp_path / "repo").exists()


def test_triton_never_writes_outside_out(built_copy, tmp_path):
    """The repository used to link folder / entry["path"] to version / entry["path"]: '../..' escaped --out."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    data = read_manifest(built_copy)["graphs"]["full"]["files"][0]
    (built_copy / "w.onnx.data").write_bytes(b"weights")

    def add_data(data_):
        data_["graphs"]["full"]["files"].append({**data, "path": "../../../victim.txt"})
    rewrite(built_copy, add_data)
    result = CliRunner().invoke(main, ["triton", str(built_copy), "--out", str(tmp_path / "r" / "repo")])
    assert result.exit_code == 2 and "outside its folder" in result.output and "Traceback" not in result.output
    assert victim.read_text() == "keep me" and not (tmp_path / "r" / "repo").exists()


# ------------------------------------------------------------------ item 2: permissions are never widened


def test_triton_keeps_the_engine_files_permissions(built_copy, tmp_path):
    manifest = read_manifest(built_copy)
    engine = built_copy / manifest["graphs"]["full"]["files"][0]["path"]
    os.chmod(engine, 0o600)
    repo = write_repository(built_copy, tmp_path / "repo", progress=quiet)
    assert stat.S_IMODE(engine.stat().st_mode) == 0o600
    assert stat.S_IMODE((repo / "dit_full" / "1" / "model.onnx").stat().st_mode) == 0o600
    assert stat.S_IMODE((repo / "dit_full").stat().st_mode) == 0o755


def test_triton_copies_keep_the_source_mode(built_copy, tmp_path, monkeypatch):
    from hilo_export.serving import repository

    def no_links(*_):
        raise OSError(errno.EXDEV, "cross-device link")
    monkeypatch.setattr(repository.os, "link", no_links)
    engine = built_copy / read_manifest(built_copy)["graphs"]["full"]["files"][0]["path"]
    os.chmod(engine, 0o640)
    repo = write_repository(built_copy, tmp_path / "repo", progress=quiet)
    assert stat.S_IMODE((repo / "dit_full" / "1" / "model.onnx").stat().st_mode) == 0o640


# ------------------------------------------------------------------ item 5: the structure is validated


def minimal(data):
    for key in list(data):
        if key not in ("schema_version", "model", "resolution", "token_size"):
            del data[key]


def wrong_types(data):
    data["grid"] = "12x20"
    data["buckets"][0]["kept"] = "many"


def no_full_bucket(data):
    data["buckets"] = [b for b in data["buckets"] if b["name"] != "full"]


def unknown_graph(data):
    data["buckets"][0]["graph"] = "other"


def empty_buckets(data):
    data["buckets"] = []


@pytest.mark.parametrize("change", [minimal, wrong_types, no_full_bucket, unknown_graph, empty_buckets])
@pytest.mark.parametrize("command", [["inspect", "{}"], ["validate", "{}"], ["plan", "--engines", "{}", "--json"],
                                     ["triton", "{}", "--out", "{}/../repo"]])
def test_a_malformed_manifest_is_one_clear_error(built_copy, change, command):
    rewrite(built_copy, change)
    result = CliRunner().invoke(main, [part.format(built_copy) for part in command])
    assert result.exit_code == 2, result.output
    assert "malformed" in result.output and "rebuild the folder" in result.output
    assert not isinstance(result.exception, (KeyError, TypeError, IndexError))


def test_the_real_manifest_passes_the_schema(built):
    read_manifest(built)  # the schema is checked on every read: a build's own manifest must pass it


# ------------------------------------------------------------------ item 6: one build at a time


def test_a_second_build_into_a_locked_folder_is_refused(built_copy):
    with FileLock(built_copy / workspace.LOCK):
        with pytest.raises(BuildError, match="another hilo-export build is writing"):
            build(BuildRequest("tiny-flux", resolution=BUILD_RESOLUTION, out_dir=built_copy, config=PlannerConfig(**BUILT_PLANNER)), progress=quiet)
    build(BuildRequest("tiny-flux", resolution=BUILD_RESOLUTION, out_dir=built_copy, config=PlannerConfig(**BUILT_PLANNER)), progress=quiet)  # free again


# ------------------------------------------------------------------ items 7, 8: leftovers, unwritable, no-op


def test_leftovers_of_killed_writes_are_removed(built_copy, tmp_path):
    dead = 2 ** 22 + 17  # above the default pid_max: no such process
    leftovers = [f".manifest.json.{dead}.abcd.json", f".planner-{'0' * 16}.onnx.{dead}.x.onnx"]
    for name in leftovers:
        (built_copy / name).write_bytes(b"half")
    (built_copy / ".notes").write_text("not ours")
    build(BuildRequest("tiny-flux", resolution=BUILD_RESOLUTION, out_dir=built_copy, config=PlannerConfig(**BUILT_PLANNER)), progress=quiet)
    assert not any((built_copy / name).exists() for name in leftovers) and (built_copy / ".notes").exists()

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / f".out.png.{dead}.zz.png").write_bytes(b"half")
    (pictures / f".out.png.{os.getpid()}.live.png").write_bytes(b"being written")
    with atomic_path(pictures / "out.png") as tmp:
        tmp.write_bytes(b"png")
    assert sorted(p.name for p in pictures.iterdir()) == [f".out.png.{os.getpid()}.live.png", "out.png"]


def test_an_up_to_date_rebuild_leaves_the_manifest_alone(built_copy):
    manifest = built_copy / "manifest.json"
    before = manifest.stat().st_mtime_ns, manifest.stat().st_ino
    messages = []
    build(BuildRequest("tiny-flux", resolution=BUILD_RESOLUTION, out_dir=built_copy, config=PlannerConfig(**BUILT_PLANNER)), progress=messages.append)
    assert (manifest.stat().st_mtime_ns, manifest.stat().st_ino) == before
    assert any(m.endswith("is up to date") for m in messages)


def test_unwritable_output_is_a_clear_error(built_copy, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    result = CliRunner().invoke(main, ["build", "--model", "tiny-flux", "--resolution", "32x32", "--out", str(blocker / "x")])
    assert result.exit_code == 2 and "choose a writable --out" in result.output, result.output
    result = CliRunner().invoke(main, ["triton", str(built_copy), "--out", str(blocker / "repo")])
    assert result.exit_code == 2 and "choose a writable --out" in result.output, result.output

    from hilo_export import files

    def read_only(*_, **__):
        raise OSError(errno.EROFS, "Read-only file system", str(built_copy / ".manifest.json.1.x.json"))
    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    with pytest.raises(BuildError, match="Read-only file system.*choose a writable --out"):
        build(BuildRequest("tiny-flux", buckets="s", resolution=BUILD_RESOLUTION, out_dir=built_copy), progress=quiet)
    with pytest.raises(TritonRepoError, match="choose a writable --out"):
        monkeypatch.setattr("hilo_export.serving.repository.tempfile.mkdtemp", read_only)
        write_repository(built_copy, tmp_path / "repo", progress=quiet)

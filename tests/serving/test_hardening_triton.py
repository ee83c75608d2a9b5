"""``hilo-export triton`` never deletes what it did not write, and cleans up after killed runs."""

import os

import pytest
from click.testing import CliRunner

from hilo_export.cli import main
from hilo_export.folder.manifest import read_manifest
from hilo_export.runtime import HiLoRuntime
from hilo_export.serving.repository import TritonRepoError, validate_repository, write_repository


def quiet(_):
    pass


def triton(folder, out, *extra):
    return CliRunner().invoke(main, ["triton", str(folder), "--out", str(out), "--backend", "ort", *extra])


@pytest.mark.parametrize("where", ["itself", "parent", "inside"])
def test_out_may_not_be_contain_or_lie_in_the_engine_folder(built_copy, where):
    sibling = built_copy.parent / "notes.txt"
    sibling.write_text("unrelated")
    out = {"itself": built_copy, "parent": built_copy.parent, "inside": built_copy / "repo"}[where]
    before = sorted(p.name for p in built_copy.iterdir())
    result = triton(built_copy, out, "--force")
    assert result.exit_code == 2 and "the engine folder" in result.output, result.output
    assert sorted(p.name for p in built_copy.iterdir()) == before and sibling.read_text() == "unrelated"
    HiLoRuntime.load(built_copy)  # every file still there and intact


def test_force_replaces_only_a_repository_it_wrote(built_copy, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("not a repository")
    result = triton(built_copy, out, "--force")
    assert result.exit_code == 2 and "did not write (thesis.tex)" in result.output, result.output
    assert (out / "thesis.tex").read_text() == "not a repository"

    repo = write_repository(built_copy, tmp_path / "repo", progress=quiet)
    (repo / "planner" / "1" / "stale").write_text("ours to replace")
    assert triton(built_copy, repo, "--force").exit_code == 0
    assert not (repo / "planner" / "1" / "stale").exists()
    validate_repository(repo, read_manifest(built_copy), "ort")


def test_leftovers_of_a_killed_run_are_removed(built_copy, tmp_path):
    """A killed run leaves its staging folder beside --out, possibly with full copies of the weights."""
    out = tmp_path / "repo"
    leftovers = [tmp_path / ".repo-k1ll3d.partial", tmp_path / ".repo-0ld.old"]
    for path in leftovers:
        (path / "dit_full" / "1").mkdir(parents=True)
        (path / "dit_full" / "1" / "weights.data").write_bytes(b"\0" * 4096)
    unrelated = tmp_path / ".repo-notes"
    unrelated.write_text("a user's file")
    write_repository(built_copy, out, progress=quiet)
    assert not any(path.exists() for path in leftovers)
    assert unrelated.read_text() == "a user's file"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".repo-")) == [".repo-notes"]


def test_a_second_run_on_the_same_out_is_refused(built_copy, tmp_path):
    import fcntl

    fd = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a running triton holds
    try:
        with pytest.raises(TritonRepoError, match="another hilo-export triton is writing"):
            write_repository(built_copy, tmp_path / "repo", progress=quiet)
    finally:
        os.close(fd)
    write_repository(built_copy, tmp_path / "repo", progress=quiet)


def test_out_dot_with_force_leaves_nothing_behind(built_copy, tmp_path, monkeypatch):
    repo = write_repository(built_copy, tmp_path / "repo", progress=quiet)
    monkeypatch.chdir(repo)
    result = triton(built_copy, ".", "--force")
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engines", "repo"]
    assert (repo / "dit_full" / "config.pbtxt").is_file()
    assert os.path.samefile(repo, tmp_path / "repo")

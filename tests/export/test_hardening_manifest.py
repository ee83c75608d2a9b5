"""manifest.json itself is input: a fifo, a device, a folder, bad bytes or deep nesting get one clear error."""

import os

import pytest
from click.testing import CliRunner
from conftest import BUILD_RESOLUTION, deadline

from hilo_export.cli import main
from hilo_export.export import BuildRequest, build
from hilo_export.folder import manifest as manifest_module
from hilo_export.folder.manifest import ManifestError, read_manifest
from hilo_export.runtime import HiLoRuntime


def fifo(path):
    path.unlink()
    os.mkfifo(path)


def device(path):
    path.unlink()
    path.symlink_to("/dev/zero")


def folder(path):
    path.unlink()
    path.mkdir()
    (path / "x").write_text("{}")


def bad_utf8(path):
    path.write_bytes(b'{"schema_version": 2, "name": "\xff\xfe"}')


def deep(path):
    path.write_text("[" * 100_000 + "]" * 100_000)


def deep_object(path):
    # within the JSON parser's reach (a guard: this one was already refused, by its digest)
    text = path.read_text()
    depth = 700  # parses; the digest and schema check recurse deeper than that
    path.write_text(text.replace('"config": {', '"config": ' + '{"a": ' * depth + '{' + '}' * depth + ', "b": {', 1))


CASES = [fifo, device, folder, bad_utf8, deep, deep_object]


@pytest.mark.parametrize("breakage", CASES)
def test_a_broken_manifest_file_is_one_clear_error(built_copy, breakage):
    breakage(built_copy / "manifest.json")
    with deadline():
        with pytest.raises(ManifestError, match="rebuild the folder"):
            HiLoRuntime.load(built_copy)
        result = CliRunner().invoke(main, ["inspect", str(built_copy)])
    assert result.exit_code == 2, result.output
    assert "manifest.json" in result.output and "Traceback" not in result.output


def test_a_huge_manifest_is_refused_before_it_is_read(built_copy, monkeypatch):
    monkeypatch.setattr(manifest_module, "MAX_MANIFEST_BYTES", 1000)  # a real one is a few kilobytes
    with pytest.raises(ManifestError, match="more than the 1000 bytes"):
        read_manifest(built_copy)


@pytest.mark.parametrize("breakage", [fifo, device, folder, bad_utf8, deep])
def test_a_build_replaces_a_broken_manifest(built_copy, breakage):
    breakage(built_copy / "manifest.json")
    with deadline(120):
        build(BuildRequest("tiny-flux", resolution=BUILD_RESOLUTION, out_dir=built_copy), progress=lambda _: None)
    assert (built_copy / "manifest.json").is_file() and not (built_copy / "manifest.json").is_symlink()
    HiLoRuntime.load(built_copy)

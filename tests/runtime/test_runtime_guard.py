"""What the runtime runs is what was verified, and serving many shapes does not grow memory."""

import pytest
from conftest import built_step_inputs, textured_image

from hilo_export.folder.backends.ort import OrtBackend
from hilo_export.folder.manifest import ManifestError, read_manifest
from hilo_export.runtime import HiLoRuntime


def test_a_file_changed_after_load_is_caught_when_its_engine_is_made(built_copy):
    """Sessions are made on first use; a file changed in between used to run (output: NaN)."""
    runtime = HiLoRuntime.load(built_copy)  # every sha256 checks out here
    path = built_copy / read_manifest(built_copy)["graphs"]["hilo"]["files"][0]["path"]
    data = bytearray(path.read_bytes())
    data[-64:] = b"\xff" * 64  # the tail of the last initializer: still a valid protobuf
    path.write_bytes(bytes(data))
    plan = runtime.plan(textured_image(24, 40), textured_image(24, 40)[..., 0] > 250)
    with pytest.raises(ManifestError, match="changed since it was built"):
        runtime(plan=plan, **built_step_inputs())


def test_unverified_loads_still_run(built):
    runtime = HiLoRuntime.load(built, verify=False)
    plan = runtime.plan(textured_image(24, 40), textured_image(24, 40)[..., 0] > 250)
    assert runtime(plan=plan, **built_step_inputs()).isfinite().all()


def test_sessions_do_not_keep_a_memory_arena_per_shape(built):
    """ORT's CPU arena and memory patterns keep every shape's peak: 9 GB grew to 21-23 GB on flux-shaped."""
    path = built / read_manifest(built)["graphs"]["hilo"]["files"][0]["path"]
    options = OrtBackend().session(path, None).get_session_options()
    assert not options.enable_cpu_mem_arena and not options.enable_mem_pattern

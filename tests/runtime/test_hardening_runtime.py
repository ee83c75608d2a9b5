"""What the runtime runs is what it verified, for every graph; unverified loads still get clear errors."""

import numpy as np
import pytest
import torch
from conftest import built_step_inputs, resign, textured_image

from hilo_export.folder.manifest import ManifestError, read_manifest
from hilo_export.runtime import HiLoRuntime


def plan_for(runtime, fraction_pixel):
    image = textured_image(24, 40)
    return runtime.plan(image, image[..., 0] > fraction_pixel)


def flip_in_place(path, offset, count=4096):
    """Change bytes without a new inode: a shared memory map of the file sees the change."""
    with open(path, "r+b") as f:
        f.seek(offset)
        data = bytearray(f.read(count))
        f.seek(offset)
        f.write(bytes(b ^ 0x5A for b in data))


def test_weights_changed_after_the_first_engine_are_not_run(built, built_copy):
    """The full graph's engine used to verify the shared weights; the hilo engine made later read the
    same mapping unchecked (flipped bytes ran: 3.2e9 instead of 89.4)."""
    expected = HiLoRuntime.load(built)
    runtime = HiLoRuntime.load(built_copy)
    inputs = built_step_inputs()
    dense = runtime(plan=runtime.plan(textured_image(24, 40), np.ones((192, 320), bool)), **inputs)  # the full graph
    weights = built_copy / read_manifest(built_copy)["weights"]["files"][0]["path"]
    flip_in_place(weights, 0, weights.stat().st_size)
    plan = plan_for(runtime, 250)
    assert plan.bucket != "full"
    try:
        got = runtime(plan=plan, **inputs)
    except ManifestError as err:  # refusing is as good as running what was verified
        assert "changed since it was built" in str(err)
    else:
        torch.testing.assert_close(got, expected(plan=plan, **inputs))
    torch.testing.assert_close(runtime(plan=runtime.plan(textured_image(24, 40), np.ones((192, 320), bool)), **inputs), dense)


def test_an_unverified_load_of_a_truncated_weights_file_is_a_clear_error(built_copy):
    weights = built_copy / read_manifest(built_copy)["weights"]["files"][0]["path"]
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(ManifestError, match="truncated"):
        runtime = HiLoRuntime.load(built_copy, verify=False)
        runtime(plan=plan_for(runtime, 250), **built_step_inputs())
    resign(built_copy)  # re-signed: the sizes in the manifest now say the truncated size
    with pytest.raises(ManifestError, match="reads bytes .* which holds"):
        HiLoRuntime.load(built_copy, verify=False)

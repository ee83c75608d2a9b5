"""Wrong objects handed to the runtime or to apply() get one clear error, not an AttributeError."""

import pytest
from conftest import built_step_inputs

from hilo_export.errors import HiLoError
from hilo_export.runtime import HiLoRuntime
from hilo_export.runtime.pipeline import apply


@pytest.mark.parametrize("plan", [None, "s", {"bucket": "s"}])
def test_a_missing_or_wrong_plan_is_a_clear_error(built, plan):
    runtime = HiLoRuntime.load(built)
    with pytest.raises(HiLoError, match="plan= must be a TokenPlan"):
        runtime(plan=plan, **built_step_inputs())


class NoTransformer:
    pass


class NotADiT:
    transformer = "a string"


@pytest.mark.parametrize("pipe, said", [(NoTransformer(), "NoTransformer has no transformer"),
                                        (NotADiT(), "a transformer of type str")])
def test_apply_on_an_object_without_a_transformer_is_a_clear_error(built, pipe, said):
    with pytest.raises(HiLoError, match=f"apply needs a diffusers pipeline.*{said}"):
        apply(pipe, HiLoRuntime.load(built))


def test_apply_with_something_else_than_a_runtime_is_a_clear_error(flux_model):
    class Pipe:
        transformer = flux_model
    with pytest.raises(HiLoError, match="apply runs a HiLoRuntime .* got str"):
        apply(Pipe(), "engines/x")

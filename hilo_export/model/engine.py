"""``EngineModule``: the function every engine of a build computes, as a torch module.

Inputs: the adapter's full-grid model inputs, then ``keep_indices`` int64 [B, K], ``fill``
[B, N, C_out] and, when the graph has low-frequency tokens, ``use_fill`` bool [1]. Outputs:
``output`` [B, N, C_out], the kept tokens' predictions scattered over the tokens without one,
and (low-frequency graphs) ``lowfreq_output`` [B, L, C_out].

Tokens without a prediction take ``fill`` when ``use_fill`` is true, else their block's
low-frequency prediction. That choice lives here, once (``sequence.expand``): it is exported
inside every ONNX graph, so ONNX Runtime, TensorRT, Triton, C++ and the torch backend all get
it from the same code. Graphs without low-frequency tokens (``full``, or no low-frequency
layout) always scatter over ``fill``.

Pure torch: the export stage traces this module, the torch backend runs it.
"""

from __future__ import annotations

from typing import Any

import torch

from ..planning.plan import LowFreqLayout
from .sequence import PlanTensors, expand

FULL_KIND = "full"
ENGINE_INPUTS = ("keep_indices", "fill", "use_fill")  # what the engines take besides the model's inputs


def layout_of(kind: str, grid: tuple[int, int], lowfreq_factor: int | None) -> LowFreqLayout | None:
    """The low-frequency layout of one graph kind (``full`` has none)."""
    return None if kind == FULL_KIND or lowfreq_factor is None else LowFreqLayout(lowfreq_factor, tuple(grid))


class EngineModule(torch.nn.Module):
    """One graph kind (``hilo`` or ``full``) of one build, called with tensors in ``input_names`` order."""

    def __init__(self, adapter: Any, model: torch.nn.Module, kind: str, grid: tuple[int, int], lowfreq_factor: int | None):
        super().__init__()
        self.adapter = adapter
        self.model = model
        self.kind = kind
        self.grid = tuple(grid)
        layout = layout_of(kind, grid, lowfreq_factor)
        self.n_lowfreq = 0 if layout is None else layout.count
        self.register_buffer("pool", None if layout is None else layout.pooling_matrix(), persistent=False)
        self.register_buffer("block", None if layout is None else layout.block_of_token(), persistent=False)
        extra = ENGINE_INPUTS if layout is not None else ENGINE_INPUTS[:2]  # use_fill only where tokens drop
        self.input_names = [*adapter.input_names(model), *extra]
        self.output_names = ["output", "lowfreq_output"] if layout is not None else ["output"]

    @property
    def n_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, *tensors: torch.Tensor):
        inputs = dict(zip(self.input_names, tensors))
        keep, fill, use_fill = inputs.pop("keep_indices"), inputs.pop("fill"), inputs.pop("use_fill", None)
        block = None if self.block is None else self.block.expand(keep.shape[0], -1)
        plan = PlanTensors(keep, self.pool, block)
        predictions = self.adapter.predict(self.model, plan, self.n_tokens, inputs)
        output = expand(predictions, plan, self.n_tokens, fill, use_fill)
        return (output, predictions[:, :self.n_lowfreq]) if self.n_lowfreq else output


def engine_module(class_name: str, config: dict, state_dict: dict[str, torch.Tensor], spec: dict,
                  device: torch.device) -> EngineModule:
    """A graph's module from a torch engine folder: the diffusers class ``class_name`` made from
    ``config`` on the meta device (no weights materialized twice), ``state_dict`` assigned (its
    tensors already on ``device``), wrapped for the graph ``spec`` (kind, grid, lowfreq_factor)."""
    import diffusers

    from .adapters import adapter_for
    from .loading import ModelError
    from .lowfreq import PREFIX as LOWFREQ_PREFIX
    from .lowfreq import add_lowfreq

    cls = getattr(diffusers, class_name, None)
    if cls is None:
        raise ModelError(f"diffusers {diffusers.__version__} has no {class_name}; install the diffusers the folder was built with")
    with torch.device("meta"):
        model = cls.from_config(config)
        if any(key.startswith(LOWFREQ_PREFIX) for key in state_dict):  # a distilled model's learned embedding
            add_lowfreq(model)
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    if missing or unexpected:
        raise ModelError(f"the torch engine's weights do not fit {class_name} (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}); rebuild the folder")
    model = model.to(device).eval()
    module = EngineModule(adapter_for(model), model, spec["kind"], tuple(spec["grid"]), spec["lowfreq_factor"])
    return module.to(device).eval()

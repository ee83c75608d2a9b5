"""The reference: the engine graph run eagerly by torch (stock diffusers model, float64 RoPE)."""

from __future__ import annotations

import numpy as np
import torch


class TorchRunner:
    def __init__(self, graph: torch.nn.Module):
        """``graph``: a module with ``input_names`` and ``output_names`` (export.graph.EngineGraph)."""
        self._graph = graph.eval()
        self.output_names = list(graph.output_names)

    def run(self, bucket: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = [torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in self._graph.input_names]
        with torch.no_grad():
            outputs = self._graph(*tensors)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return {name: out.float().numpy() for name, out in zip(self.output_names, outputs)}

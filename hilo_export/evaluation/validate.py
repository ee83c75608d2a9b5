"""``hilo-export validate``: every bucket's engine against the torch reference, through polygraphy."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..export.graph import (
    PRECISIONS,
    TOLERANCES,
    EngineGraph,
    GraphSpec,
    example_keep,
    relative_error,
)
from ..folder.backends.torch import TorchRunner
from ..folder.manifest import ManifestError
from ..model.adapters import adapter_for
from ..model.loading import load_model
from ..runtime.runtime import HiLoRuntime
from .errors import require_eval

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BucketResult:
    bucket: str
    kept: int
    max_abs: float
    max_rel: float
    passed: bool


def validate(folder: Path, progress: Callable[[str], None] = log.info, verbose: bool = False) -> list[BucketResult]:
    comparator = require_eval("polygraphy.comparator", "validate")
    Comparator, SimpleCompareFunc = comparator.Comparator, comparator.SimpleCompareFunc
    G_LOGGER = require_eval("polygraphy.logger", "validate").G_LOGGER
    G_LOGGER.module_severity = G_LOGGER.INFO if verbose else G_LOGGER.WARNING
    G_LOGGER.colors = False  # plain text in our log; with colors on it also warns when `colored` is missing

    runtime = HiLoRuntime.load(folder)
    manifest = runtime.manifest
    loaded = load_model(manifest["model"]["name"])
    if loaded.weights_sha256 != manifest["model"]["weights_sha256"]:
        raise ManifestError(
            f"the weights of {manifest['model']['name']} changed since {folder} was built; rebuild it before validating"
        )
    precision = manifest["precision"]
    model = loaded.model if loaded.model.dtype == PRECISIONS[precision] else loaded.model.to(PRECISIONS[precision])
    adapter = adapter_for(model)
    if precision == "bf16":
        raise ManifestError("validate does not compare bf16 folders (ONNX Runtime on a CPU has no bf16 kernels; the build "
                            "checked the graphs with ONNX's reference evaluator, see inspect); check one statically with "
                            "hilo-export validate --trt-check")
    atol = rtol = TOLERANCES[precision]  # against a torch model of the same dtype
    progress(
        f"tolerance: an element fails when |engine - torch| exceeds both {atol:g} and {rtol:g} * |torch| "
        "(polygraphy's rule); the largest errors are printed per bucket"
    )
    results = []
    for bucket in manifest["buckets"]:
        spec_data = manifest["graphs"][bucket["graph"]]["spec"]
        spec = GraphSpec(**{**spec_data, "grid": tuple(spec_data["grid"])})
        graph = EngineGraph(adapter, model, spec)
        keep = example_keep(spec.n_tokens, bucket["kept"], seed=len(results))
        feeds = {name: value.numpy() for name, value in graph.example_feed(keep).items()}
        name = bucket["name"]
        engine = _polygraphy_runner(f"{manifest['backend']['name']}[{name}]", feeds, lambda f, n=name: runtime.run_bucket(n, f))
        reference = TorchRunner(graph)
        torch_runner = _polygraphy_runner(f"torch[{name}]", feeds, lambda f, r=reference, n=name: r.run(n, f))
        run_results = Comparator.run([engine, torch_runner], data_loader=[feeds])
        accuracy = Comparator.compare_accuracy(run_results, compare_func=SimpleCompareFunc(atol=atol, rtol=rtol))
        (_, engine_out), (_, torch_out) = [(r, outs[0]) for r, outs in run_results.items()]
        max_abs = max(float(np.abs(engine_out[k].astype(np.float32) - torch_out[k]).max()) for k in torch_out)
        max_rel = max(relative_error(engine_out[k], torch_out[k]) for k in torch_out)
        results.append(BucketResult(name, bucket["kept"], max_abs, max_rel, bool(accuracy)))
        progress(
            f"bucket {name:4s} K={bucket['kept']:<6d} max abs error {max_abs:.2e}  max relative error {max_rel:.2e}  "
            f"{'OK' if accuracy else 'MISMATCH'}"
        )
    return results


def _polygraphy_runner(name: str, example: dict[str, np.ndarray], infer: Callable[[dict], dict]):
    """A polygraphy runner around any callable from feeds to outputs (the class is made here, so
    importing this module needs no polygraphy: it is an optional extra)."""
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    class CallableRunner(BaseRunner):
        def activate_impl(self):
            pass

        def deactivate_impl(self):
            pass

        def get_input_metadata_impl(self):
            metadata = TensorMetadata()
            for key, array in example.items():
                metadata.add(key, array.dtype, array.shape)
            return metadata

        def infer_impl(self, feed_dict):
            start = time.perf_counter()
            outputs = OrderedDict(infer(feed_dict))
            self.inference_time = time.perf_counter() - start
            return outputs

    return CallableRunner(name=name)

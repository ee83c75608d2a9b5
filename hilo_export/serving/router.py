"""What the Triton model ``hilo_edit_step`` does with one request, without Triton.

One edit step: run the planner on the image and mask (it chooses the bucket), run the DiT
model of the planned bucket on the full-grid inputs plus the plan's ``keep_indices`` and the
``fill``. Tokens without a prediction take ``fill`` when one was sent, else their block's
low-frequency prediction: the engine graph does that itself (``use_fill``), as for every
other consumer of the graphs. Models are reached through one callable, ``run_model(name, feeds,
output_names) -> outputs``, which the Triton glue (model.py) implements with BLS requests and
tests implement with ONNX Runtime sessions.

This file is copied next to model.py into the model repository, so it imports nothing but
numpy and the standard library (the Python backend has no torch or hilo_export).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:  # inside Triton the Python backend has no hilo_export: there the router's errors stand alone
    from hilo_export.errors import HiLoError
except ImportError:  # pragma: no cover - exercised only inside a Triton model repository
    class HiLoError(Exception):  # type: ignore[no-redef]
        """Stand-in for hilo_export.errors.HiLoError where hilo_export is not installed."""

ROUTING_FILE = "routing.json"
ROUTING_FORMAT = 3  # 3: the graphs fill dropped tokens (buckets say whether they take use_fill)
IMAGE, MASK, FILL, USE_FILL, OUTPUT, BUCKET = "image", "mask", "fill", "use_fill", "output", "bucket"

RunModel = Callable[[str, dict[str, np.ndarray], list[str]], dict[str, np.ndarray]]


class RequestError(HiLoError, ValueError):
    """A request this model cannot serve; the message says what to send instead."""


class Router:
    """Routes requests with the facts of one built folder (``routing.json``, written by hilo_export.serving.repository)."""

    def __init__(self, routing: dict[str, Any]):
        if routing.get("format") != ROUTING_FORMAT:
            raise ValueError(f"routing format {routing.get('format')!r}, this router reads {ROUTING_FORMAT}: regenerate the repository")
        self.height, self.width = routing["image_size"]
        self.batch = routing["batch"]
        self.planner = routing["planner"]
        self.inputs = {spec["name"]: spec for spec in routing["inputs"]}
        self.fill = routing["fill"]
        self.buckets = routing["buckets"]

    @classmethod
    def load(cls, path: str | Path) -> Router:
        return cls(json.loads(Path(path).read_text()))

    def step(self, request: dict[str, np.ndarray], run_model: RunModel) -> dict[str, np.ndarray]:
        """One request (engine shapes): returns ``output`` (the full grid) and ``bucket`` (int64 [1])."""
        image, mask = self._image_and_mask(request)
        feeds = {name: self._checked(request, spec) for name, spec in self.inputs.items()}
        unknown = set(request) - set(self.inputs) - {IMAGE, MASK, FILL}
        if unknown:
            raise RequestError(f"unexpected inputs {sorted(unknown)}; send {sorted(self.inputs)} plus image, mask and optionally fill")

        plan = run_model(self.planner, {IMAGE: image, MASK: mask}, [BUCKET, "keep_indices"])
        index = int(np.asarray(plan[BUCKET]).reshape(-1)[0])
        bucket = self.buckets[index]
        keep = np.asarray(plan["keep_indices"], np.int64).reshape(-1)
        if not bucket["kept_min"] <= keep.shape[0] <= bucket["kept"]:
            # only a planner from another build can do this; the repository is inconsistent
            raise RuntimeError(f"the planner kept {keep.shape[0]} tokens for bucket {bucket['name']}, its engine takes "
                               f"{bucket['kept_min']}..{bucket['kept']}")

        fill = request.get(FILL)
        feeds["keep_indices"] = np.ascontiguousarray(np.broadcast_to(keep, (self.batch, keep.shape[0])))
        feeds[FILL] = np.zeros(self.fill["shape"], self.fill["dtype"]) if fill is None else self._checked(request, self.fill)
        if bucket[USE_FILL]:
            feeds[USE_FILL] = np.array([fill is not None])
        outputs = run_model(bucket["model"], feeds, [OUTPUT])
        return {OUTPUT: np.asarray(outputs[OUTPUT]), BUCKET: np.array([index], np.int64)}

    def step_rows(self, request: dict[str, np.ndarray], run_model: RunModel) -> dict[str, np.ndarray]:
        """A batched request (``--max-batch``): every row is one request of engine shapes, planned on its own."""
        rows = {len(value) for value in request.values()}
        if len(rows) != 1:
            raise RequestError(f"batched inputs disagree on the number of rows: {sorted(rows)}")
        results = [self.step({name: value[i] for name, value in request.items()}, run_model) for i in range(rows.pop())]
        return {name: np.stack([r[name] for r in results]) for name in (OUTPUT, BUCKET)}

    def _image_and_mask(self, request: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        for name in (IMAGE, MASK):
            if name not in request:
                raise RequestError(f"missing input {name!r}: send the image (uint8 H x W x 3) and the edit mask (uint8 H x W, 255 = edit)")
        image = np.asarray(request[IMAGE])
        mask = np.asarray(request[MASK])
        if image.dtype != np.uint8 or image.shape != (self.height, self.width, 3):
            raise RequestError(
                f"image is {image.dtype} {list(image.shape)}; the engines serve uint8 [{self.height}, {self.width}, 3] (RGB)"
            )
        if mask.dtype != np.uint8 or mask.shape != (self.height, self.width):
            raise RequestError(f"mask is {mask.dtype} {list(mask.shape)}; send uint8 [{self.height}, {self.width}], 255 = edit")
        if mask.size and mask.max() == 1:
            # the planner reads pixels >= 128 as edited (as hilo_export.planning does): 0/1 would plan nothing
            raise RequestError("mask holds only 0 and 1, but masks are read as 0/255 (>= 128 = edit); multiply it by 255")
        return image, mask

    def _checked(self, request: dict[str, np.ndarray], spec: dict[str, Any]) -> np.ndarray:
        name = spec["name"]
        if name not in request:
            raise RequestError(f"missing input {name!r} ({spec['dtype']} {spec['shape']})")
        value = np.asarray(request[name])
        if list(value.shape) != list(spec["shape"]):
            raise RequestError(f"{name} has shape {list(value.shape)}, the engines take {spec['shape']}")
        if value.dtype != np.dtype(spec["dtype"]):
            raise RequestError(f"{name} is {value.dtype}, the engines take {spec['dtype']}")
        return np.ascontiguousarray(value)

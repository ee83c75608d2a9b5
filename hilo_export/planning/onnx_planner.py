"""The planner as an ONNX model, for servers with no Python planner (Triton, C++).

``planner_model`` writes the graph of ``plan.plan_tokens`` for one build: its resolution,
token size, planner settings and bucket table are constants of the graph.

    inputs   image         uint8 [H, W, 3]  RGB
             mask          uint8 [H, W]     pixels >= 128 are edited (as the planner reads uint8)
    outputs  bucket        int64 [1]        index into the manifest's bucket list
             keep_indices  int64 [k_kept]   TokenPlan.keep_indices: the engines' keep_indices row
                                            (exact sizing: the plan's own length)
             scores        float32 [h, w]   TokenPlan.scores: the regional frequency score ranked by

That is all an engine needs: positions and low-frequency pooling are computed inside the
engine graphs from ``keep_indices`` and the grid.

The graph repeats the Python planner's arithmetic (frequency.py) op for op, so its plans are equal, not close: the mask,
gray sums and the choice of bucket are integer arithmetic; the Sobel magnitudes, token sums and
regional means are the same float32 operations in the same order (frequency.py avoids fused and
unordered operations for this reason); ranking is TopK, which ONNX defines to put the lower
index first among equal values, as plan.py's stable sort does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .buckets import K_AXIS, parse_buckets, rooms
from .frequency import GRAY_WEIGHTS, analysis_stride, score_scale, window_counts
from .plan import RANDOM, RING, LowFreqLayout, PlanError, PlannerConfig
from .selection import MASK_KEY, random_rank

PLANNER_OPSET = 17  # the oldest opset with every op used here: runs on older ONNX Runtimes too
PLANNER_IR_VERSION = 8


class _Graph:
    """Appends nodes with fresh output names; constants become initializers."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self._helper, self._numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def _name(self, op: str) -> str:
        self._count += 1
        return f"{op.lower()}_{self._count}"

    def const(self, value: Any, dtype: Any) -> str:
        name = self._name("const")
        self.initializers.append(self._numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op: str, *inputs: str, outputs: int = 1, **attrs: Any) -> Any:
        names = [self._name(op) for _ in range(outputs)]
        self.nodes.append(self._helper.make_node(op, list(inputs), names, name=names[0], **attrs))
        return names[0] if outputs == 1 else names

    def slice(self, x: str, starts: list[int], ends: list[int], axes: list[int]) -> str:
        i64 = np.int64
        return self.op("Slice", x, self.const(starts, i64), self.const(ends, i64), self.const(axes, i64))

    def reshape(self, x: str, shape: list[int]) -> str:
        return self.op("Reshape", x, self.const(shape, np.int64))

    def fold_sum(self, x: str, axis: int, parts: int, shape_after: list[int]) -> str:
        """frequency._sum_along: parts summed left to right along ``axis``, which is then dropped."""
        if parts == 1:
            return self.reshape(x, shape_after)
        pieces = self.op("Split", x, axis=axis, outputs=parts)
        total = self.op("Add", pieces[0], pieces[1])
        for piece in pieces[2:]:
            total = self.op("Add", total, piece)
        return self.reshape(total, shape_after)


def planner_model(resolution: tuple[int, int], token_size: int, buckets: str, config: PlannerConfig):
    """The ONNX planner of a build (``resolution`` is width, height in pixels)."""
    from onnx import TensorProto, checker, helper

    width, height = resolution
    if width <= 0 or height <= 0 or width % token_size or height % token_size:
        raise PlanError(f"resolution {width}x{height} must be positive multiples of the token size {token_size}")
    h, w = height // token_size, width // token_size
    n_tokens = h * w
    table = parse_buckets(buckets)
    layout = None if config.lowfreq_factor is None else LowFreqLayout(config.lowfreq_factor, (h, w))
    n_lowfreq = layout.count if layout else 0
    stride = analysis_stride(token_size, config.freq_samples)
    rows, cols = height // stride, width // stride
    per_token = token_size // stride
    i64, f32 = np.int64, np.float32

    g = _Graph()

    # 1. mask tokens (inputs.token_mask): pixels >= 128, opened and grown by max pools (erosion is
    # a max pool of the complement), counted per token, dilated by a max pool (inputs.dilate)
    pixels_cfg = config.mask_pixels(token_size)
    mask = g.op("Cast", "mask", to=TensorProto.INT32)
    if pixels_cfg == {"open_px": 0, "grow_px": 0, "min_pixels": 1}:
        peak = g.op("ReduceMax", g.reshape(mask, [h, token_size, w, token_size]), axes=[1, 3], keepdims=0)
        tokens = g.op("Greater", peak, g.const(127, np.int32))
    else:
        one = g.const(1.0, f32)
        pixels = g.reshape(g.op("Cast", g.op("Greater", mask, g.const(127, np.int32)), to=TensorProto.FLOAT),
                           [1, 1, height, width])

        def max_pool(x: str, radius: int) -> str:
            size = 2 * radius + 1
            return g.op("MaxPool", x, kernel_shape=[size, size], pads=[radius] * 4, strides=[1, 1]) if radius else x

        if pixels_cfg["open_px"]:
            eroded = g.op("Sub", one, max_pool(g.op("Sub", one, pixels), pixels_cfg["open_px"]))
            pixels = max_pool(eroded, pixels_cfg["open_px"])
        pixels = max_pool(pixels, pixels_cfg["grow_px"])
        # sums of 0/1 up to token_size^2 pixels: exact in float32
        counts = g.op("ReduceSum", g.reshape(pixels, [h, token_size, w, token_size]), g.const([1, 3], i64), keepdims=0)
        tokens = g.op("GreaterOrEqual", counts, g.const(float(pixels_cfg["min_pixels"]), f32))
    if config.dilation:
        size = 2 * config.dilation + 1
        as_float = g.reshape(g.op("Cast", tokens, to=TensorProto.FLOAT), [1, 1, h, w])
        pooled = g.op("MaxPool", as_float, kernel_shape=[size, size], pads=[config.dilation] * 4, strides=[1, 1])
        tokens = g.op("Greater", g.reshape(pooled, [h, w]), g.const(0.0, f32))
    mask_flat = g.reshape(tokens, [n_tokens])

    # 2. frequency score (frequency._box_gray, _pooled_sobel, frequency_map): exact integer gray sums
    wide = np.int32 if 255 * sum(GRAY_WEIGHTS) * stride * stride < 2**31 else np.int64
    pixels = g.op("Cast", "image", to=helper.np_dtype_to_tensor_dtype(np.dtype(wide)))
    summed = g.op("ReduceSum", g.reshape(pixels, [rows, stride, cols, stride, 3]), g.const([1, 3], i64), keepdims=0)
    gray_sum = g.op("ReduceSum", g.op("Mul", summed, g.const(GRAY_WEIGHTS, wide)), g.const([2], i64), keepdims=0)
    gray = g.op("Cast", gray_sum, to=TensorProto.FLOAT)
    padded = g.op("Pad", gray, g.const([1, 1, 1, 1], i64), mode="edge")  # [rows + 2, cols + 2]

    def smoothed(d: str, axis: int, n: int) -> str:  # (a + c) + 2b along axis, as frequency.py
        a = g.slice(d, [0], [n], [axis])
        b = g.slice(d, [1], [n + 1], [axis])
        c = g.slice(d, [2], [n + 2], [axis])
        return g.op("Add", g.op("Add", a, c), g.op("Mul", b, g.const(2.0, f32)))

    dx = g.op("Sub", g.slice(padded, [2], [cols + 2], [1]), g.slice(padded, [0], [cols], [1]))
    dy = g.op("Sub", g.slice(padded, [2], [rows + 2], [0]), g.slice(padded, [0], [rows], [0]))
    gx, gy = smoothed(dx, 0, rows), smoothed(dy, 1, cols)
    magnitude = g.op("Sqrt", g.op("Add", g.op("Mul", gx, gx), g.op("Mul", gy, gy)))
    by_rows = g.fold_sum(g.reshape(magnitude, [h, per_token, cols]), 1, per_token, [h, w, per_token])
    cell_sum = g.fold_sum(by_rows, 2, per_token, [h, w])
    score = g.op("Div", cell_sum, g.const(score_scale(token_size, config.freq_samples, True), f32))

    # 3. regional mean (frequency.regional_mean): zero-padded windows summed in row-major order
    radius = config.region_radius
    if radius:
        size = 2 * radius + 1
        padded_score = g.op("Pad", score, g.const([radius] * 4, i64), g.const(0.0, f32), mode="constant")
        total = None
        for dy_ in range(size):
            for dx_ in range(size):
                window = g.slice(padded_score, [dy_, dx_], [dy_ + h, dx_ + w], [0, 1])
                total = window if total is None else g.op("Add", total, window)
        score = g.op("Div", total, g.const(window_counts((h, w), radius).numpy(), f32))

    g.nodes.append(helper.make_node("Identity", [score], ["scores"], name="scores"))

    # 4. bucket (buckets.choose_bucket, the one rule): the number of partial buckets whose room
    # (buckets.rooms, the one table) is below the mask's token count
    n_mask = g.op("ReduceSum", g.op("Cast", mask_flat, to=TensorProto.INT64), g.const([0], i64), keepdims=1)
    room = rooms(table, n_tokens, n_lowfreq)
    partial = room[:-1]
    if partial:
        too_small = g.op("Cast", g.op("Less", g.const(partial, i64), n_mask), to=TensorProto.INT64)
        bucket = g.op("ReduceSum", too_small, g.const([0], i64), keepdims=1)
    else:
        bucket = g.const([0], i64)
    g.nodes.append(helper.make_node("Identity", [bucket], ["bucket"], name="bucket"))

    # 5. selection (plan._select): mask tokens rank first (key 2 > any score), then the highest
    # scores, lower index first among equals; the kept indices in ascending order. The full
    # bucket keeps all N tokens, which the same steps give. How many (plan_batch): padded, the
    # bucket's room; exact, the mask plus the (capped) high-frequency region, clamped to
    # [1, room] (full: N).
    k = g.op("Gather", g.const(room, i64), bucket, axis=0)
    if config.sizing != "padded":
        outside = g.op("Not", mask_flat)
        high = g.op("GreaterOrEqual", g.reshape(score, [n_tokens]), g.const(config.freq_threshold, f32))
        n_region = g.op("ReduceSum", g.op("Cast", g.op("And", high, outside), to=TensorProto.INT64), g.const([0], i64), keepdims=1)
        if config.max_high_freq is not None:
            n_region = g.op("Min", n_region, g.const([int(config.max_high_freq * n_tokens)], i64))
        floors = [n_tokens if b.is_full else 1 for b in table]
        wanted = g.op("Max", g.op("Add", n_mask, n_region), g.op("Gather", g.const(floors, i64), bucket, axis=0))
        k = g.op("Min", k, wanted)
    key = g.op("Where", mask_flat, g.const(MASK_KEY, f32), _context_key(g, config, tokens, score, (h, w)))
    _, order = g.op("TopK", key, k, axis=0, largest=1, sorted=1, outputs=2)
    ascending, _ = g.op("TopK", order, k, axis=0, largest=0, sorted=1, outputs=2)
    g.nodes.append(helper.make_node("Identity", [ascending], ["keep_indices"], name="keep_indices"))

    graph = helper.make_graph(
        g.nodes,
        "hilo_planner",
        [
            helper.make_tensor_value_info("image", TensorProto.UINT8, [height, width, 3]),
            helper.make_tensor_value_info("mask", TensorProto.UINT8, [height, width]),
        ],
        [
            helper.make_tensor_value_info("bucket", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("keep_indices", TensorProto.INT64, [K_AXIS]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [h, w]),
        ],
        g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", PLANNER_OPSET)],
        ir_version=PLANNER_IR_VERSION,
        producer_name="hilo-export",
        doc_string=(
            f"hilo-export planner: {width}x{height} px, token {token_size} px, buckets "
            f"{[b.name for b in table]}, planner {config.to_dict()}"
        ),
    )
    checker.check_model(model, full_check=True)
    return model


def _context_key(g: _Graph, config: PlannerConfig, tokens: str, score: str, grid: tuple[int, int]) -> str:
    """The context policy's ranking key, flat [h * w] (selection.context_key, op for op)."""
    from onnx import TensorProto

    h, w = grid
    if config.context == RANDOM:  # a constant of the build: one draw per grid and seed
        return g.const(-random_rank(grid, config.context_seed).reshape(-1).numpy(), np.float32)
    if config.context == RING:  # selection.ring_distance: count the 3x3 dilations that miss a token
        one = g.const(1.0, np.float32)
        reached = g.reshape(g.op("Cast", tokens, to=TensorProto.FLOAT), [1, 1, h, w])
        distance = None
        for step in range(max(h, w)):
            missed = g.op("Sub", one, reached)
            distance = missed if distance is None else g.op("Add", distance, missed)
            if step + 1 < max(h, w):
                reached = g.op("MaxPool", reached, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
        return g.op("Neg", g.reshape(distance, [h * w]))
    return g.reshape(score, [h * w])


def write_planner(path: Path, resolution: tuple[int, int], token_size: int, buckets: str, config: PlannerConfig) -> Path:
    """Write the ONNX planner to ``path`` atomically."""
    from ..files import atomic_path

    model = planner_model(resolution, token_size, buckets, config)
    with atomic_path(path) as tmp:
        tmp.write_bytes(model.SerializeToString())
    return path

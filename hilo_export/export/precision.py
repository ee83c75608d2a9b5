"""Float32 islands in fp16/bf16 graphs: the ops whose intermediate values overflow half precision.

Flux in fp16 has two known hazards. LayerNorm (``LayerNormalization``, the AdaLN norms of every
block) sums squares of activations that reach the thousands: the variance overflows fp16's
65504 when a kernel keeps it in the input type (TensorRT warns about exactly this and does it
unless told otherwise). Attention softmax exponentiates and sums a row of 4608 scores. Both
are wrapped here in Cast-to-float32 / Cast-back, so every backend computes them in float32 and
only their (bounded: normalized, probabilities) outputs return to half precision.

Not needed for the others: diffusers' RMSNorm (the q/k norms) already casts to float32 before
its mean of squares, and the exported graph keeps that cast; rotary embeddings are computed
in float32 by the adapter's export mode. bf16 has float32's exponent range, so there the
islands cost a little time for accuracy (its 8-bit mantissa sums long rows poorly) rather
than prevent overflow; they are applied to both.
"""

from __future__ import annotations

from .errors import ExportError

FLOAT32_OPS = ("LayerNormalization", "Softmax")


def compute_in_float32(model) -> int:
    """Wrap every half-precision ``FLOAT32_OPS`` node of the IR ``model`` in casts; returns how many."""
    import onnx_ir as ir

    half = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)
    wrapped = 0
    graph = model.graph
    for node in list(graph):
        if node.domain not in ("", "ai.onnx") or node.op_type not in FLOAT32_OPS:
            continue
        low = node.inputs[0].dtype
        if low not in half:
            continue
        for index, value in enumerate(node.inputs):
            if value is None or value.dtype not in half:
                continue
            cast = ir.node("Cast", [value], attributes={"to": ir.DataType.FLOAT}, name=f"{node.name}_in{index}_f32")
            cast.outputs[0].dtype = ir.DataType.FLOAT
            cast.outputs[0].shape = value.shape
            graph.insert_before(node, cast)
            node.replace_input_with(index, cast.outputs[0])
        output = node.outputs[0]
        uses = list(output.uses())
        back = ir.node("Cast", [output], attributes={"to": low}, name=f"{node.name}_out_{low.name.lower()}")
        back.outputs[0].dtype = low
        back.outputs[0].shape = output.shape
        graph.insert_after(node, back)
        for user, index in uses:
            user.replace_input_with(index, back.outputs[0])
        if output in graph.outputs:
            graph.outputs[graph.outputs.index(output)] = back.outputs[0]
        output.dtype = ir.DataType.FLOAT
        # LayerNormalization's optional mean / inverse-std outputs are never used by the model
        for extra in node.outputs[1:]:
            if extra.uses():
                raise ExportError(f"{node.name} uses LayerNormalization's statistics outputs; cannot move it to float32")
        wrapped += 1
    return wrapped

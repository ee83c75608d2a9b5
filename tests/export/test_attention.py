"""Attention in query slices: same result as torch, fewer bytes of scores at once."""

import numpy as np
import onnx
import pytest
import torch

from hilo_export.export.attention import SCORES_BUDGET_BYTES, attention_chunks, chunked_attention_translation


class Attend(torch.nn.Module):
    def forward(self, q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def _export(chunks: int, length: int, path):
    q, k, v = (torch.randn(1, 3, length, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    sequence = torch.export.Dim("sequence", min=2, max=64)
    program = torch.onnx.export(Attend(), (q, k, v), dynamo=True, custom_translation_table=chunked_attention_translation(chunks),
                                dynamic_shapes=({2: sequence}, {2: sequence}, {2: sequence}), input_names=["q", "k", "v"])
    program.save(str(path))
    return onnx.load(str(path))


@pytest.mark.parametrize("length", [5, 12, 40])  # 5 < 2 * chunks: the last slices are short
def test_chunked_attention_matches_torch_at_every_length(tmp_path, length):
    import onnxruntime

    proto = _export(3, 12, tmp_path / "a.onnx")
    assert sum(n.op_type == "Softmax" for n in proto.graph.node) == 3
    session = onnxruntime.InferenceSession(str(tmp_path / "a.onnx"), providers=["CPUExecutionProvider"])
    q, k, v = (torch.randn(1, 3, length, 8, generator=torch.Generator().manual_seed(10 + i)) for i in range(3))
    got = session.run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()})[0]
    np.testing.assert_allclose(got, Attend()(q, k, v).numpy(), rtol=1e-5, atol=1e-6)


def test_one_slice_keeps_the_exporters_own_translation():
    assert chunked_attention_translation(1) == {}


def test_chunks_keep_one_slice_of_scores_under_the_budget():
    # flux-shaped at 1024x1024: 24 heads, 512 text + 4096 image tokens, 2 GiB of float32 scores
    chunks = attention_chunks(1, 24, 4608)
    assert chunks == 8
    assert 24 * (4608 / chunks) * 4608 * 4 <= SCORES_BUDGET_BYTES < 24 * (4608 / (chunks - 1)) * 4608 * 4
    assert attention_chunks(1, 2, 72) == 1  # tiny-flux: nothing to split

"""The student: LoRA and a learned low-frequency embedding that start as today's model, exactly."""

import sys

import numpy as np
import pytest
import torch
from conftest import TOKEN, flux_inputs, textured_image, tiny_flux

from hilo_export.model.loading import load_model
from hilo_export.model.lowfreq import LOWFREQ_FILE, PREFIX, has_lowfreq
from hilo_export.model.transformer import HiLoTransformer
from hilo_export.model.weights import ShardedWeights, meta_model
from hilo_export.planning import PlannerConfig, plan_batch, plan_tokens
from hilo_export.training import Student, TrainError, hilo_loss
from hilo_export.training.sources import save_transformer

GRID = 16  # 16 x 16 tokens of 8 px; low-frequency blocks of 4 x 4 tokens: 16 of them
CONFIG = PlannerConfig(lowfreq_factor=4)


def edit(seed=0):
    image = textured_image(GRID, GRID, seed)
    mask = np.zeros((GRID * TOKEN, GRID * TOKEN), np.uint8)
    mask[40:72, 48:80] = 255
    return image, mask


def planned(seed=0):
    image, mask = edit(seed)
    plan = plan_tokens(image, mask, token_size=TOKEN, config=CONFIG)
    assert plan.bucket != "full" and plan.n_lowfreq == 16
    return plan


def hilo(model, plan, inputs):
    with torch.no_grad():
        return HiLoTransformer(model)(**inputs, plan=plan, return_dict=False)[0]


def test_step_zero_is_todays_model_bit_for_bit():
    model, plan = tiny_flux(), planned()
    inputs = flux_inputs(model, GRID, GRID)
    with torch.no_grad():
        dense = model(**inputs, return_dict=False)[0]
    before = hilo(model, plan, inputs)
    student = Student(model, rank=4)
    assert len(student.layers) == 12 + 2 * 5  # double block: 8 attention, 4 feed-forward linears; single: q k v mlp out
    assert torch.equal(hilo(model, plan, inputs), before)
    assert torch.equal(student.teacher(inputs), dense)
    with torch.no_grad():
        assert torch.equal(student.dense(inputs), dense)
    # what is trained: the adapters and the low-frequency difference, nothing of the model itself
    names = set(student.trainable())
    assert {PREFIX + "weight", PREFIX + "bias"} <= names and all("lora_" in n or n.startswith(PREFIX) for n in names)


def test_the_learned_embedding_moves_only_the_low_frequency_tokens():
    model, plan = tiny_flux(), planned()
    inputs = flux_inputs(model, GRID, GRID)
    before = hilo(model, plan, inputs)
    student = Student(model, rank=4)
    with torch.no_grad():
        student.lowfreq.lowfreq_delta.weight.normal_(0, 0.5)
    after = hilo(model, plan, inputs)
    assert not torch.allclose(after, before, atol=1e-3)  # the low-frequency tokens reach every kept token
    with torch.no_grad():
        assert torch.equal(student.dense(inputs), student.teacher(inputs))  # no low-frequency tokens: untouched


def test_teacher_runs_without_adapters_and_merging_keeps_the_students_output(tmp_path):
    model, plan = tiny_flux(), planned()
    inputs = flux_inputs(model, GRID, GRID)
    with torch.no_grad():
        stock_dense = model(**inputs, return_dict=False)[0]
    student = Student(model, rank=4)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in student.trainable().items():
            param.copy_(torch.randn(param.shape, generator=g) * 0.05)
    trained_hilo = hilo(model, plan, inputs)
    with torch.no_grad():
        trained_dense = student.dense(inputs)
    assert torch.equal(student.teacher(inputs), stock_dense)
    assert not torch.allclose(trained_dense, stock_dense, atol=1e-4)
    merged = student.merge()
    assert not any("lora_" in k for k in merged.state_dict())
    torch.testing.assert_close(hilo(merged, plan, inputs), trained_hilo, atol=1e-5, rtol=1e-5)

    # saved: diffusers' own keys in its files, the learned embedding beside them; loading brings both back
    save_transformer(merged, tmp_path, torch.float32)
    assert (tmp_path / LOWFREQ_FILE).exists()
    loaded = load_model(str(tmp_path)).model
    assert has_lowfreq(loaded)
    torch.testing.assert_close(hilo(loaded, plan, inputs), trained_hilo, atol=1e-5, rtol=1e-5)
    # the exporter's view: a meta model with the embedding, and its tensors streamed from the extra file
    meta_keys = set(meta_model(tmp_path).state_dict())
    weights = ShardedWeights(tmp_path)
    assert PREFIX + "weight" in meta_keys and meta_keys == set(weights.entries())
    assert torch.equal(weights.tensor(PREFIX + "weight"), loaded.x_embedder.lowfreq_delta.weight)


def test_the_loss_is_zero_dense_at_step_zero_and_weights_the_mask():
    model = tiny_flux()
    images, masks = zip(*(edit(seed) for seed in (0, 1)))
    plans = plan_batch(list(images), list(masks), token_size=TOKEN, config=CONFIG)
    inputs = flux_inputs(model, GRID, GRID)
    student = Student(model, rank=4)
    teacher = student.teacher(inputs)
    assert float(hilo_loss(student, plans, inputs, teacher, 4.0, dense=True).detach()) == 0.0
    light = float(hilo_loss(student, plans, inputs, teacher, 1.0, dense=False).detach())
    heavy = float(hilo_loss(student, plans, inputs, teacher, 10.0, dense=False).detach())
    assert 0 < light and np.isfinite(heavy) and heavy != light
    # the gradient reaches what is trained: the low-frequency difference first of all
    hilo_loss(student, plans, inputs, teacher, 4.0, dense=False).backward()
    assert student.lowfreq.lowfreq_delta.weight.grad.abs().sum() > 0


def test_without_peft_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    with pytest.raises(TrainError, match=r"pip install 'hilo-export\[train\]'"):
        Student(tiny_flux(), rank=4)


def test_the_torch_engine_takes_a_distilled_models_weights():
    # a torch engine folder stores the learned embedding's tensors beside the stock ones: its module must take them
    from hilo_export.model.engine import engine_module
    from hilo_export.model.lowfreq import add_lowfreq

    model = tiny_flux()
    add_lowfreq(model).lowfreq_delta.weight.data.fill_(0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert any(k.startswith(PREFIX) for k in state)
    spec = {"kind": "hilo", "grid": [4, 4], "lowfreq_factor": 2}
    module = engine_module(type(model).__name__, dict(model.config), state, spec, torch.device("cpu"))
    assert has_lowfreq(module.model)
    assert torch.equal(module.model.state_dict()[PREFIX + "weight"], state[PREFIX + "weight"])

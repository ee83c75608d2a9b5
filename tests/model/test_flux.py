import numpy as np
import pytest
import torch
from conftest import TOKEN, flux_inputs, grid_ids, textured_image, tiny_flux

from hilo_export import HiLoTransformer, PlannerConfig, plan_batch, plan_tokens
from hilo_export.model import ModelError, PlanTensors, compress

H, W = 12, 16  # token grid of the tests (non-square); low-frequency blocks of 4 -> 3 x 4 blocks
LOWFREQ = PlannerConfig(lowfreq_factor=4)
NO_LOWFREQ = PlannerConfig(lowfreq_factor=None)


def make_plan(buckets="s,m,l", config=LOWFREQ, box=(20, 50, 30, 70), seed=0):
    mask = np.zeros((H * TOKEN, W * TOKEN), bool)
    y0, y1, x0, x1 = box
    mask[y0:y1, x0:x1] = True
    return plan_tokens(textured_image(H, W, seed), mask, token_size=TOKEN, buckets=buckets, config=config)


def run(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, **kwargs).sample


def reference_compressed(model, inputs, plan):
    """The compressed forward written out with plain indexing, independent of the ops module."""
    keep = plan.keep_indices
    x = inputs["hidden_states"]
    ids = inputs["img_ids"]
    seq, seq_ids = [x[:, keep]], [ids[keep]]
    if plan.lowfreq is not None:
        block = plan.lowfreq.block_of_token()
        means = [x[:, block == b].mean(dim=1) for b in range(plan.lowfreq.count)]
        seq.insert(0, torch.stack(means, dim=1))
        seq_ids.insert(0, torch.stack([ids[block == b].mean(dim=0) for b in range(plan.lowfreq.count)]))
    short = dict(inputs, hidden_states=torch.cat(seq, dim=1), img_ids=torch.cat(seq_ids))
    return run(model, short)


@pytest.mark.parametrize(
    "variant",
    [dict(), dict(in_channels=12, out_channels=4), dict(guidance=True)],
    ids=["plain", "fill-style", "guidance-distilled"],
)
def test_full_bucket_equals_stock_model(variant):
    model = tiny_flux(**variant)
    inputs = flux_inputs(model, H, W)
    plan = make_plan(buckets="full")
    assert plan.bucket == "full"
    stock = run(model, inputs)
    hilo = run(HiLoTransformer(model), inputs, plan=plan)
    assert hilo.shape == stock.shape
    assert (hilo - stock).abs().max() <= 1e-5


@pytest.mark.parametrize("variant", [dict(), dict(in_channels=12, out_channels=4, guidance=True)], ids=["plain", "fill-guidance"])
def test_compressed_forward_matches_a_plain_reimplementation(variant):
    model = tiny_flux(**variant)
    inputs = flux_inputs(model, H, W)
    plan = make_plan()
    assert plan.bucket != "full" and plan.n_lowfreq == 12
    hilo = run(HiLoTransformer(model), inputs, plan=plan)
    reference = reference_compressed(model, inputs, plan)
    kept = plan.keep_indices
    assert torch.allclose(hilo[:, kept], reference[:, plan.n_lowfreq :], atol=1e-5)
    # tokens without a prediction take their block's low-frequency prediction
    block = plan.lowfreq.block_of_token()
    dropped = torch.ones(H * W, dtype=torch.bool)
    dropped[kept] = False
    assert torch.allclose(hilo[:, dropped], reference[:, block[dropped]], atol=1e-5)


def test_dropped_tokens_get_fill_exactly(flux_model):
    inputs = flux_inputs(flux_model, H, W)
    plan = make_plan()
    fill = torch.randn(2, H * W, flux_model.out_channels)
    out = run(HiLoTransformer(flux_model), inputs, plan=plan, fill=fill)
    dropped = torch.ones(H * W, dtype=torch.bool)
    dropped[plan.keep_indices] = False
    assert dropped.any()
    assert torch.equal(out[:, dropped], fill[:, dropped])


def test_kept_tokens_ignore_dropped_tokens_without_lowfreq(flux_model):
    plan = make_plan(config=NO_LOWFREQ)
    assert plan.n_lowfreq == 0 and plan.bucket != "full"
    inputs = flux_inputs(flux_model, H, W)
    fill = torch.zeros(2, H * W, flux_model.out_channels)
    dropped = torch.ones(H * W, dtype=torch.bool)
    dropped[plan.keep_indices] = False
    changed = dict(inputs, hidden_states=inputs["hidden_states"].clone())
    changed["hidden_states"][:, dropped] = 100.0 * torch.randn(2, int(dropped.sum()), 8)
    model = HiLoTransformer(flux_model)
    first, second = run(model, inputs, plan=plan, fill=fill), run(model, changed, plan=plan, fill=fill)
    assert torch.equal(first[:, plan.keep_indices], second[:, plan.keep_indices])
    with pytest.raises(ModelError, match="pass fill="):
        run(model, inputs, plan=plan)


def test_sequence_positions_are_the_plan_positions():
    plan = make_plan()
    tensors = PlanTensors.from_plan(plan, 1, torch.device("cpu"))
    positions = compress(grid_ids(H, W)[None], tensors)[0]
    assert torch.allclose(positions[:, 1:], plan.positions)
    assert torch.equal(positions[:, 0], torch.zeros(plan.length))


def test_lowfreq_positions_stay_exact_in_bf16():
    """Partial 16-token blocks on an 85 x 48 grid (a 1360 x 768 Flux image): bf16 averaging would drift."""
    h, w = 48, 85
    mask = np.zeros((h * TOKEN, w * TOKEN), bool)
    mask[:50, :50] = True
    plan = plan_tokens(textured_image(h, w), mask, token_size=TOKEN)
    assert plan.n_lowfreq == 3 * 6
    tensors = PlanTensors.from_plan(plan, 1, torch.device("cpu"))
    positions = compress(grid_ids(h, w)[None].bfloat16(), tensors)[0]
    assert positions.dtype == torch.bfloat16
    assert torch.equal(positions[: plan.n_lowfreq, 1:].float(), plan.positions[: plan.n_lowfreq])


def run_counting_calls(model, inputs, plan):
    """HiLoTransformer output and how many times the stock model ran."""
    calls = []
    hook = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        return run(HiLoTransformer(model), inputs, plan=plan), len(calls)
    finally:
        hook.remove()


def assert_rows_match_single_runs(model, inputs, plans, batched):
    for row, plan in enumerate(plans):
        single = {k: v if k in ("img_ids", "txt_ids") else v[row : row + 1] for k, v in inputs.items()}
        assert torch.allclose(run(HiLoTransformer(model), single, plan=plan), batched[row : row + 1], atol=1e-5)


def test_a_shared_plan_runs_the_batch_in_one_call(flux_model):
    plan = make_plan()
    inputs = flux_inputs(flux_model, H, W, batch=3)
    batched, calls = run_counting_calls(flux_model, inputs, plan)
    assert calls == 1
    assert_rows_match_single_runs(flux_model, inputs, [plan] * 3, batched)


def test_one_plan_per_sample(flux_model):
    masks = [np.zeros((H * TOKEN, W * TOKEN), bool) for _ in range(3)]
    masks[0][10:40, 10:40] = True
    masks[1][60:90, 50:120] = True
    masks[2][10:40, 10:40] = True
    image = textured_image(H, W)
    plans = plan_batch([image] * 3, masks, token_size=TOKEN, config=LOWFREQ)
    assert plans[0].same_selection(plans[2]) and not plans[0].same_selection(plans[1])
    inputs = flux_inputs(flux_model, H, W, batch=3)
    batched, calls = run_counting_calls(flux_model, inputs, plans)
    assert calls == 2, "samples with the same selection share one call"
    assert_rows_match_single_runs(flux_model, inputs, plans, batched)


def test_positional_call_and_tuple_return(flux_model):
    inputs = flux_inputs(flux_model, H, W)
    plan = make_plan()
    model = HiLoTransformer(flux_model)
    order = ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids"]
    with torch.no_grad():
        (positional,) = model(*[inputs[k] for k in order], plan=plan, return_dict=False)
    assert torch.equal(positional, run(model, inputs, plan=plan))
    assert model.config.in_channels == 8


def test_gradients_flow_through_the_compressed_forward(flux_model):
    model = HiLoTransformer(flux_model)
    out = model(**flux_inputs(flux_model, H, W), plan=make_plan()).sample
    out.square().mean().backward()
    grad = flux_model.x_embedder.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    flux_model.zero_grad()


def test_errors_name_the_fix(flux_model):
    model = HiLoTransformer(flux_model)
    plan = make_plan()
    inputs = flux_inputs(flux_model, H, W)
    with pytest.raises(ModelError, match="plan with an image of the latents' size"):
        run(model, flux_inputs(flux_model, H, W + 1), plan=plan)
    with pytest.raises(ModelError, match=r"\[batch, tokens, channels\]"):
        run(model, dict(inputs, hidden_states=inputs["hidden_states"][0]), plan=plan)
    with pytest.raises(ModelError, match="fill has shape"):
        run(model, inputs, plan=plan, fill=torch.zeros(2, H * W, 3))
    with pytest.raises(ModelError, match="one plan, or one per sample"):
        run(model, inputs, plan=[plan])
    with pytest.raises(ModelError, match="not supported"):
        run(model, inputs, plan=plan, controlnet_block_samples=[torch.zeros(1)])
    with pytest.raises(ModelError, match="no HiLo adapter for Linear"):
        HiLoTransformer(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("guidance", [False, True])
def test_adapter_input_names_follow_its_example_inputs(guidance):
    from hilo_export.model import adapter_for

    model = tiny_flux(guidance=guidance)
    adapter = adapter_for(model)
    assert adapter.input_names(model) == list(adapter.example_inputs(model, 1, (2, 3), 4, torch.float32))

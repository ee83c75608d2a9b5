import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from hilo_export.model import load_reference, reference_weights_dir
from hilo_export.reference import model as ref


def test_pack_and_unpack_are_inverse():
    pixels = torch.randn(2, 3, 24, 40)
    tokens = ref.pack(pixels)
    assert tokens.shape == (2, 3 * 5, ref.LATENT_CHANNELS)
    assert torch.equal(ref.unpack(tokens, (3, 5)), pixels)


def test_diffusion_fill_keeps_known_pixels_and_fills_from_them():
    image = torch.zeros(1, 3, 32, 32)
    image[..., :16] = 1.0  # left half white, right half black
    hole = torch.zeros(1, 1, 32, 32)
    hole[..., 8:24, 8:24] = 1
    filled = ref.diffusion_fill(image, hole)
    assert torch.equal(filled[hole.expand_as(image) == 0], image[hole.expand_as(image) == 0])
    inside = filled[..., 8:24, 8:24]
    assert inside.min() >= 0 and inside.max() <= 1
    assert inside[..., :, 0].mean() > inside[..., :, -1].mean()  # brighter next to the white side
    mean = ref.mean_fill(image, hole)
    assert torch.allclose(mean[..., 16, 16], image[hole.expand_as(image) == 0].view(3, -1).mean(1))


def test_last_euler_step_lands_on_the_predicted_image():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    scheduler.set_timesteps(sigmas=[1.0, 0.5])
    noisy, prefill, residual = torch.randn(3, 1, 4, 8).unbind(0)
    sigma = float(scheduler.sigmas[0])
    x = scheduler.step(ref.velocity(residual, noisy, prefill, sigma), scheduler.timesteps[0], noisy, return_dict=False)[0]
    expected = noisy + 0.5 * (prefill + residual - noisy)  # halfway from x_t to the predicted x0
    assert torch.allclose(x, expected, atol=1e-6)


def test_untrained_model_predicts_no_correction():
    model = ref.new_model()
    cond, _ = ref.condition(torch.rand(1, 3, 32, 32) * 2 - 1, torch.zeros(1, 1, 32, 32))
    inputs = ref.model_inputs(torch.randn(1, 16, ref.LATENT_CHANNELS), cond, torch.tensor([0.5]), (4, 4))
    with torch.no_grad():
        assert torch.count_nonzero(model(**inputs, return_dict=False)[0]) == 0


def test_shipped_weights_load_in_float32_and_are_small():
    model = load_reference()
    assert model.dtype == torch.float32
    assert {k: model.config[k] for k in ref.CONFIG} == {k: list(v) if isinstance(v, tuple) else v for k, v in ref.CONFIG.items()}
    weights = reference_weights_dir() / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 40e6
    assert any(p.abs().sum() > 0 for p in model.proj_out.parameters())  # trained: not the zero start


def test_image_conversions_round_trip():
    image = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    assert np.array_equal(ref.to_uint8(ref.to_tensor(image)), image)


def test_decoder_starts_as_identity_and_never_touches_known_pixels(tmp_path):
    from safetensors.torch import save_file

    decoder = ref.Decoder()
    image = torch.rand(1, 3, 16, 24) * 2 - 1
    hole = torch.zeros(1, 1, 16, 24)
    hole[..., 4:12, 8:16] = 1
    assert torch.equal(decoder(image, hole), image)
    with torch.no_grad():
        for p in decoder.parameters():
            p.add_(0.01)
    out = decoder(image, hole)
    known = hole.expand_as(image) == 0
    assert torch.equal(out[known], image[known]) and not torch.equal(out, image)
    assert ref.load_decoder(tmp_path) is None  # a v1 folder: no decoder
    save_file({k: v.half().contiguous() for k, v in decoder.state_dict().items()}, tmp_path / ref.DECODER_FILE)
    loaded = ref.load_decoder(tmp_path)
    assert torch.allclose(loaded(image, hole), out, rtol=1e-2, atol=1e-2)  # float16 storage


class _FirstInput(torch.nn.Module):
    """Records the noisy tokens of the first step (pure noise at sigma 1) and predicts nothing."""

    def __init__(self):
        super().__init__()
        self.first = None

    def forward(self, hidden_states, return_dict=True, **kwargs):
        if self.first is None:
            self.first = hidden_states[..., :ref.LATENT_CHANNELS].clone()
        return (torch.zeros(*hidden_states.shape[:2], ref.LATENT_CHANNELS),)


def test_a_crop_sees_the_full_edits_noise():
    from hilo_export.reference.pipeline import ReferenceInpaintPipeline

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    mask = np.zeros((48, 64), bool)
    mask[10:30, 20:40] = True
    full, crop = _FirstInput(), _FirstInput()
    for model, args in ((full, (image, mask)), (crop, (image[8:40, 16:48], mask[8:40, 16:48]))):
        pipe = ReferenceInpaintPipeline(model, FlowMatchEulerDiscreteScheduler(shift=1.0), None)
        window = None if model is full else ((6, 8), 1, 2)  # token rows 1..4, cols 2..5 of the 6x8 grid
        pipe(*args, steps=1, seed=5, progress=False, noise_window=window)
    cropped = full.first.reshape(1, 6, 8, -1)[:, 1:5, 2:6].reshape(1, 16, -1)
    assert torch.equal(crop.first, cropped)

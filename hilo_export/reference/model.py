"""The reference editing model: a small trained Flux-Fill-style inpainting DiT.

No VAE weights exist offline, so the "latent" is the image itself, pixel-unshuffled: every
8x8-pixel patch becomes one token of 192 values in [-1, 1] (where Flux's VAE and 2x2
packing would give 64 learned values per 16x16 pixels). A token is 8 pixels.

Input channels, Flux Fill's layout: the noisy latent (192), the masked image (192) and the
mask (64, its 8x8 pixels). The masked image's hole is pre-filled with ``diffusion_fill``
(a push-pull fill: the "blurred fill" baseline), and the transformer predicts the clean
image's correction to it (x0-residual), which ``velocity`` turns into what the Euler
flow-matching scheduler integrates. The model starts at zero correction and is trained
towards zero outside the hole. HiLo only drops tokens outside the dilated mask, whose
pixels are all known: the pipeline resets them to their exact noisy trajectory every step
and pastes the input back at the end, so a zero fill for them changes nothing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import HiLoError

TOKEN_SIZE = 8
LATENT_CHANNELS = 3 * TOKEN_SIZE * TOKEN_SIZE  # 192
MASK_CHANNELS = TOKEN_SIZE * TOKEN_SIZE  # 64
TEXT_LEN = 1  # unconditional: one null text token
CONFIG = dict(
    patch_size=1,
    in_channels=2 * LATENT_CHANNELS + MASK_CHANNELS,
    out_channels=LATENT_CHANNELS,
    num_layers=1,
    num_single_layers=6,
    attention_head_dim=64,
    num_attention_heads=4,
    joint_attention_dim=64,
    pooled_projection_dim=64,
    guidance_embeds=False,
    axes_dims_rope=(8, 28, 28),
)


def new_model(seed: int = 0) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = FluxTransformer2DModel(**CONFIG)
    # a zero correction at start: the untrained model already gives the diffusion fill
    torch.nn.init.zeros_(model.proj_out.weight)
    torch.nn.init.zeros_(model.proj_out.bias)
    return model


DECODER_FILE = "decoder.safetensors"
DECODER_WIDTH = 32


class Decoder(torch.nn.Module):
    """Pixels in, pixels out: refines the hole of a finished edit (4 convs: a 9-px receptive field).

    Input: the edit with the known pixels outside the hole, and the hole; the output keeps
    every known pixel exactly. Starts as the identity (last layer zero).
    """

    def __init__(self, width: int = DECODER_WIDTH):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(4, width, 3, padding=1), torch.nn.GELU(),
            torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.GELU(),
            torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.GELU(),
            torch.nn.Conv2d(width, 3, 3, padding=1),
        )
        torch.nn.init.zeros_(self.net[-1].weight)
        torch.nn.init.zeros_(self.net[-1].bias)

    def forward(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """image [B, 3, H, W] in [-1, 1] (known pixels outside ``hole``), hole [B, 1, H, W] (1 = unknown)."""
        refined = image + self.net(torch.cat([image, hole], dim=1))
        return torch.where(hole > 0, refined, image)


def load_decoder(folder) -> Decoder | None:
    """The decoder stored next to the transformer's weights in ``folder``; None where there is none (v1)."""
    from pathlib import Path

    from safetensors.torch import load_file

    path = Path(folder) / DECODER_FILE
    if not path.exists():
        return None
    decoder = Decoder()
    decoder.load_state_dict({k: v.float() for k, v in load_file(path).items()})
    return decoder.eval()


# ------------------------------------------------------------------ pixels <-> tokens


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [1, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 127.5 - 1


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """float [1, 3, H, W] in [-1, 1] -> uint8 [H, W, 3]."""
    return ((image[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def pack(pixels: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> tokens [B, (H/8)(W/8), C*64], row-major like Flux."""
    tokens = F.pixel_unshuffle(pixels, TOKEN_SIZE)
    return tokens.flatten(2).transpose(1, 2)


def unpack(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    h, w = grid
    return F.pixel_shuffle(tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w), TOKEN_SIZE)


def grid_ids(grid: tuple[int, int]) -> torch.Tensor:
    h, w = grid
    ids = torch.zeros(h * w, 3)
    ids[:, 1] = torch.arange(h).repeat_interleave(w)
    ids[:, 2] = torch.arange(w).repeat(h)
    return ids


# ------------------------------------------------------------------ conditioning


def diffusion_fill(image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Fill ``hole`` (float [B, 1, H, W], 1 = unknown) from the known pixels: push-pull.

    Known pixels are averaged down a pyramid and the coarse averages pulled back up into
    the hole, a smooth, fast stand-in for diffusion (heat-equation) inpainting.
    """
    known = 1 - hole
    levels = []
    values, weight = image * known, known
    while True:
        levels.append((values, weight))
        if min(values.shape[-2:]) <= 1:
            break
        values = F.avg_pool2d(values, 2, ceil_mode=True)
        weight = F.avg_pool2d(weight, 2, ceil_mode=True)
    filled = None
    for values, weight in reversed(levels):
        mean = values / weight.clamp_min(1e-6)
        if filled is None:
            filled = torch.where(weight > 0, mean, torch.zeros_like(mean))
            continue
        coarse = F.interpolate(filled, size=values.shape[-2:], mode="bilinear", align_corners=False)
        alpha = weight.clamp(0, 1)
        filled = alpha * mean + (1 - alpha) * coarse
    return torch.where(hole > 0, filled, image)


def mean_fill(image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Baseline: the hole painted with the mean colour of the known pixels."""
    known = 1 - hole
    mean = (image * known).sum((-2, -1), keepdim=True) / known.sum((-2, -1), keepdim=True).clamp_min(1)
    return torch.where(hole > 0, mean.expand_as(image), image)


def condition(image: torch.Tensor, hole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(conditioning tokens [B, N, 256], pre-filled image tokens [B, N, 192])."""
    prefill = pack(diffusion_fill(image, hole))
    return torch.cat([prefill, pack(hole)], dim=-1), prefill


def null_text(batch: int) -> dict[str, torch.Tensor]:
    return {
        "encoder_hidden_states": torch.zeros(batch, TEXT_LEN, CONFIG["joint_attention_dim"]),
        "pooled_projections": torch.zeros(batch, CONFIG["pooled_projection_dim"]),
        "txt_ids": torch.zeros(TEXT_LEN, 3),
    }


def model_inputs(noisy: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, grid: tuple[int, int]) -> dict:
    """Stock ``FluxTransformer2DModel`` keyword inputs for noisy tokens at flow time ``t`` in [0, 1]."""
    return {
        "hidden_states": torch.cat([noisy, cond], dim=-1),
        "timestep": t.expand(noisy.shape[0]).to(noisy.dtype),
        "img_ids": grid_ids(grid),
        **null_text(noisy.shape[0]),
    }


def velocity(residual: torch.Tensor, noisy: torch.Tensor, prefill: torch.Tensor, t: float) -> torch.Tensor:
    """x0-residual prediction -> flow velocity at time t (x_t = (1-t) x0 + t noise)."""
    x0 = prefill + residual
    return (noisy - x0) / max(t, 1e-4)


class CheckpointError(HiLoError, ValueError):
    """A training checkpoint that cannot be loaded safely; the message says why."""


def load_checkpoint(path) -> dict:
    """A training checkpoint (scripts/train_reference.py) read with ``weights_only=True``: tensors,
    numbers, strings and containers only. A file from elsewhere can carry pickled code that a full
    unpickle would run; here it is refused instead."""
    import pickle

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path} is not a checkpoint that loads safely (weights only): {first}") from None


def ema_models(state: dict) -> tuple[torch.nn.Module, "Decoder | None"]:
    """(transformer, decoder) in eval mode from a loaded training checkpoint's EMA weights (``load_checkpoint``);
    no decoder for v1's."""
    model = new_model()
    model.load_state_dict(state["ema"])
    decoder = None
    if "ema_decoder" in state:
        decoder = Decoder()
        decoder.load_state_dict(state["ema_decoder"])
        decoder.eval()
    return model.eval(), decoder

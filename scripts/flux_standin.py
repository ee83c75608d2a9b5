"""A Flux-shaped DiT in plain torch, for GPU checks on machines that have torch and nothing else.

Same architecture and forward contract as diffusers' ``FluxTransformer2DModel`` (double-stream
blocks with AdaLN-zero, single-stream blocks with a fused attention + MLP projection, QK RMSNorm,
3-axis RoPE, guidance / timestep / pooled-text embedding, continuous AdaLN before the output
projection), so ``hilo_export``'s Flux adapter drives it unchanged: the class keeps diffusers'
name because adapters are found by class name. Parameter names are not diffusers' (it never
loads real weights); the shapes, FLOPs and memory are Flux's. Used by gpu_check.py.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, S, D] with interleaved (real, imaginary) pairs, as diffusers' apply_rotary_emb."""
    real, imag = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack([-imag, real], -1).flatten(-2)
    return (x.float() * cos + rotated * sin).to(x.dtype)


class _QKV(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm_q = nn.RMSNorm(dim // heads, eps=1e-6)
        self.norm_k = nn.RMSNorm(dim // heads, eps=1e-6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
        return self.norm_q(q), self.norm_k(k), v


def _attention(q, k, v, cos, sin) -> torch.Tensor:
    out = F.scaled_dot_product_attention(_rope(q, cos, sin), _rope(k, cos, sin), v)
    return out.transpose(1, 2).flatten(2)


def _mlp(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))


class _DoubleBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.mod_img, self.mod_txt = nn.Linear(dim, 6 * dim), nn.Linear(dim, 6 * dim)
        self.qkv_img, self.qkv_txt = _QKV(dim, heads), _QKV(dim, heads)
        self.out_img, self.out_txt = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.mlp_img, self.mlp_txt = _mlp(dim), _mlp(dim)

    def forward(self, img, txt, temb, cos, sin):
        mi = self.mod_img(F.silu(temb)).chunk(6, -1)
        mt = self.mod_txt(F.silu(temb)).chunk(6, -1)
        qi, ki, vi = self.qkv_img(_modulate(img, mi[0], mi[1]))
        qt, kt, vt = self.qkv_txt(_modulate(txt, mt[0], mt[1]))
        joint = _attention(torch.cat([qt, qi], 2), torch.cat([kt, ki], 2), torch.cat([vt, vi], 2), cos, sin)
        attn_txt, attn_img = joint[:, : txt.shape[1]], joint[:, txt.shape[1]:]
        img = img + mi[2][:, None] * self.out_img(attn_img)
        img = img + mi[5][:, None] * self.mlp_img(_modulate(img, mi[3], mi[4]))
        txt = txt + mt[2][:, None] * self.out_txt(attn_txt)
        txt = txt + mt[5][:, None] * self.mlp_txt(_modulate(txt, mt[3], mt[4]))
        return img, txt


class _SingleBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.mod = nn.Linear(dim, 3 * dim)
        self.qkv = _QKV(dim, heads)
        self.mlp_in = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(5 * dim, dim)

    def forward(self, x, temb, cos, sin):
        shift, scale, gate = self.mod(F.silu(temb)).chunk(3, -1)
        normed = _modulate(x, shift, scale)
        attn = _attention(*self.qkv(normed), cos, sin)
        mlp = F.gelu(self.mlp_in(normed), approximate="tanh")
        return x + gate[:, None] * self.out(torch.cat([attn, mlp], -1))


def _timestep_features(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """diffusers' Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], -1)


def _embedder(dim_in: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, dim), nn.SiLU(), nn.Linear(dim, dim))


class FluxTransformer2DModel(nn.Module):
    """Flux's transformer, keyword for keyword (see the module docstring)."""

    def __init__(self, patch_size: int = 1, in_channels: int = 64, out_channels: int | None = None, num_layers: int = 19,
                 num_single_layers: int = 38, attention_head_dim: int = 128, num_attention_heads: int = 24,
                 joint_attention_dim: int = 4096, pooled_projection_dim: int = 768, guidance_embeds: bool = False,
                 axes_dims_rope: tuple[int, ...] = (16, 56, 56)):
        super().__init__()
        self.out_channels = out_channels or in_channels
        self.config = SimpleNamespace(
            patch_size=patch_size, in_channels=in_channels, out_channels=out_channels, num_layers=num_layers,
            num_single_layers=num_single_layers, attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads, joint_attention_dim=joint_attention_dim,
            pooled_projection_dim=pooled_projection_dim, guidance_embeds=guidance_embeds, axes_dims_rope=axes_dims_rope)
        dim = attention_head_dim * num_attention_heads
        self.axes = tuple(axes_dims_rope)
        self.time_embed = _embedder(256, dim)
        self.guidance_embed = _embedder(256, dim) if guidance_embeds else None
        self.text_embed = _embedder(pooled_projection_dim, dim)
        self.context_embedder = nn.Linear(joint_attention_dim, dim)
        self.x_embedder = nn.Linear(in_channels, dim)
        self.blocks = nn.ModuleList(_DoubleBlock(dim, num_attention_heads) for _ in range(num_layers))
        self.single_blocks = nn.ModuleList(_SingleBlock(dim, num_attention_heads) for _ in range(num_single_layers))
        self.norm_out = nn.Linear(dim, 2 * dim)
        self.proj_out = nn.Linear(dim, patch_size * patch_size * self.out_channels)

    @property
    def dtype(self) -> torch.dtype:
        return self.proj_out.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.proj_out.weight.device

    def _rotary(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """FluxPosEmbed(theta=10000) in float32: cos and sin [S, head_dim], pairs repeated."""
        cos, sin = [], []
        for axis, dim in enumerate(self.axes):
            freqs = 1.0 / 10000 ** (torch.arange(0, dim, 2, device=ids.device, dtype=torch.float32) / dim)
            angles = ids[:, axis].float()[:, None] * freqs[None]
            cos.append(angles.cos().repeat_interleave(2, -1))
            sin.append(angles.sin().repeat_interleave(2, -1))
        return torch.cat(cos, -1), torch.cat(sin, -1)

    def forward(self, hidden_states, encoder_hidden_states=None, pooled_projections=None, timestep=None, img_ids=None,
                txt_ids=None, guidance=None, joint_attention_kwargs=None, return_dict=True, **_):
        dtype = hidden_states.dtype
        temb = self.time_embed(_timestep_features(timestep * 1000).to(dtype))
        if self.guidance_embed is not None:
            temb = temb + self.guidance_embed(_timestep_features(guidance * 1000).to(dtype))
        temb = temb + self.text_embed(pooled_projections)
        img = self.x_embedder(hidden_states)
        txt = self.context_embedder(encoder_hidden_states)
        cos, sin = self._rotary(torch.cat([txt_ids, img_ids], 0))
        for block in self.blocks:
            img, txt = block(img, txt, temb, cos, sin)
        x = torch.cat([txt, img], 1)
        for block in self.single_blocks:
            x = block(x, temb, cos, sin)
        img = x[:, txt.shape[1]:]
        scale, shift = self.norm_out(F.silu(temb)).chunk(2, -1)
        out = self.proj_out(F.layer_norm(img, img.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None])
        return (out,) if not return_dict else SimpleNamespace(sample=out)

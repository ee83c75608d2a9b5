"""A tiny random ``FluxFillPipeline`` assembled offline from configs, for tests, demos and latency scripts.

Every part is the real diffusers/transformers class at toy sizes: an ``AutoencoderKL`` with four
blocks (VAE factor 8, as Flux's), CLIP and T5 text encoders, word-level tokenizers made with the
``tokenizers`` library from a handful of words (nothing is downloaded), and a Flux transformer
whose ``in_channels`` are Fill's: packed latents + packed masked-image latents + the packed
8 x 8-pixel mask (``4 * c + 4 * c + 4 * 64`` for ``c`` latent channels).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import install_hint, require
from .loading import ModelError

# a handful of words is enough for prompts in tests and demos; others map to <unk>
WORDS = ("a photo of the cup on wooden table spoon coffee remove fill with red blue green cat dog and "
         "background clean empty").split()
LATENT_CHANNELS = 4
CLIP_LENGTH = 16  # the CLIP tokenizer's model_max_length, and its encoder's positions


def tiny_fill_pipeline(seed: int = 0, guidance_embeds: bool = True):
    """A ``FluxFillPipeline`` with seeded random weights (float32, CPU)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel

    require("transformers", ModelError, f"a FluxFillPipeline's text encoders need transformers: {install_hint('fill')}")
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tokenizer = _tokenizer(bos="<|startoftext|>", eos="<|endoftext|>", max_length=CLIP_LENGTH)
    t5_tokenizer = _tokenizer(bos=None, eos="</s>", max_length=512)
    vocab = len(clip_tokenizer)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=LATENT_CHANNELS, norm_num_groups=4,
            sample_size=64, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=CLIP_LENGTH, projection_dim=32,
            bos_token_id=clip_tokenizer.bos_token_id, eos_token_id=clip_tokenizer.eos_token_id,
            pad_token_id=clip_tokenizer.pad_token_id,
        ))
        text_encoder_2 = T5EncoderModel(T5Config(
            vocab_size=vocab, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=t5_tokenizer.pad_token_id,
            eos_token_id=t5_tokenizer.eos_token_id, decoder_start_token_id=t5_tokenizer.pad_token_id,
        ))
        packed = 4 * LATENT_CHANNELS  # Flux packs 2 x 2 latent pixels into one token
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=packed + packed + 4 * vae_factor**2, out_channels=packed, num_layers=1,
            num_single_layers=1, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
            pooled_projection_dim=32, guidance_embeds=guidance_embeds, axes_dims_rope=(4, 6, 6),
        )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxFillPipeline(scheduler=scheduler, vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer,
                            text_encoder_2=text_encoder_2.eval(), tokenizer_2=t5_tokenizer, transformer=transformer.eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_fill_pipeline(folder: Path, seed: int = 0, max_shard_size: str = "100KB") -> Path:
    """Save ``tiny_fill_pipeline(seed)`` as a pipeline folder, its transformer in several safetensors shards."""
    pipe = tiny_fill_pipeline(seed)
    pipe.save_pretrained(folder, max_shard_size=max_shard_size)
    return Path(folder)


def _tokenizer(bos: str | None, eos: str, max_length: int):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", eos] + ([bos] if bos else [])
    vocab = {token: i for i, token in enumerate([*specials, *WORDS])}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    template = f"{bos} $A {eos}" if bos else f"$A {eos}"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, vocab[t]) for t in (bos, eos) if t])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_length, pad_token="<pad>",
                                   unk_token="<unk>", eos_token=eos, bos_token=bos)

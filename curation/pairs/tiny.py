"""Tiny, offline stage-4 generators: the real diffusers pipeline classes from small random configs.

``tiny_editor`` is a ``FluxKontextPipeline`` (the default editor's class) and
``tiny_inpainter`` a ``StableDiffusionXLInpaintPipeline`` (the default inpainter's), so
tests, CI and the demo run the same calls a real checkpoint gets. Shapes follow FACTS.md
("Image editing / inpainting, tiny and offline"): Flux ``in_channels`` = 4 x latent
channels (2x2 packing), ``sum(axes_dims_rope)`` = head dim, ``joint_attention_dim`` =
T5 width, ``pooled_projection_dim`` = CLIP width. Nothing is downloaded: tokenizers are
built from a byte alphabet here.
"""

from __future__ import annotations

from typing import Any

TINY_SEED = 0
_CLIP_WIDTH = 32


def tiny_clip_tokenizer() -> Any:
    """A ``CLIPTokenizer`` over the byte-level alphabet (no merges): every string tokenizes."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    # Without model_max_length the tokenizer pads to 1e30 (FACTS.md).
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_t5_tokenizer() -> Any:
    """A ``T5TokenizerFast`` over letters; ``extra_ids=0`` or it adds 100 sentinel tokens."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(symbol, -1.0) for symbol in "abcdefghijklmnopqrstuvwxyz0123456789'.,▁"]
    return T5TokenizerFast(vocab=pieces, extra_ids=0)


def _clip_text_config(tokenizer: Any) -> Any:
    from transformers import CLIPTextConfig

    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=_CLIP_WIDTH, intermediate_size=37, num_hidden_layers=1,
        num_attention_heads=4, projection_dim=_CLIP_WIDTH, max_position_embeddings=77,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"), eos_token_id=end, pad_token_id=end)


def _tiny_vae(latent_channels: int, **scaling: float) -> Any:
    from diffusers import AutoencoderKL

    # Four blocks like the real VAEs: 8x smaller latents, so sequence lengths (and costs)
    # scale with the image as they do in FLUX / SDXL.
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[8, 8, 16, 16], layers_per_block=1,
        latent_channels=latent_channels, norm_num_groups=8, sample_size=64, **scaling).eval()


def tiny_editor(device: str = "cpu") -> Any:
    """The registry's tiny builder for ``editor``: a random ``FluxKontextPipeline`` (latent 4)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(TINY_SEED)
    tokenizer, tokenizer_2 = tiny_clip_tokenizer(), tiny_t5_tokenizer()
    text_encoder = CLIPTextModel(_clip_text_config(tokenizer)).eval()
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16)).eval()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=_CLIP_WIDTH,
        guidance_embeds=True, axes_dims_rope=[4, 4, 8]).eval()
    # Flux's VAE has a shift factor (the Kontext pipeline subtracts it); FLUX.1's own numbers.
    pipe = FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=_tiny_vae(4, shift_factor=0.1159, scaling_factor=0.3611), text_encoder=text_encoder,
        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def tiny_inpainter(device: str = "cpu") -> Any:
    """The registry's tiny builder for ``inpainter``: a random ``StableDiffusionXLInpaintPipeline``."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(TINY_SEED)
    tokenizer = tiny_clip_tokenizer()
    config = _clip_text_config(tokenizer)
    time_dim = 8
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=time_dim, transformer_layers_per_block=(1, 1),
        # 6 micro-conditioning numbers (sizes, crop) + the pooled text embedding
        projection_class_embeddings_input_dim=6 * time_dim + _CLIP_WIDTH,
        cross_attention_dim=2 * _CLIP_WIDTH, norm_num_groups=8).eval()
    pipe = StableDiffusionXLInpaintPipeline(
        vae=_tiny_vae(4, force_upcast=False), text_encoder=CLIPTextModel(config).eval(),
        text_encoder_2=CLIPTextModelWithProjection(config).eval(), tokenizer=tokenizer, tokenizer_2=tokenizer,
        unet=unet, scheduler=EulerDiscreteScheduler(), requires_aesthetics_score=False, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)

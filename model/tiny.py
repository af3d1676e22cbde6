"""Tiny, offline MAGREF components: the real Wan2.1 I2V classes from small random configs.

Tests, CI and the offline demo build every component here (transformer, VAE, UMT5 text
encoder + tokenizer, CLIP image encoder + processor, UniPC scheduler) so the code path
they exercise is the one a real ``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`` checkpoint runs.
Nothing is downloaded: the tokenizer is a byte-level BPE trained here on a few strings.

The shapes follow FACTS.md "Tiny model configs" → Wan I2V. Two things are fixed by Wan,
not by us: the transformer takes 36 input channels (16 noise + 4 mask + 16 reference
latents) and the text context is 512 tokens (WanAttnProcessor hard-codes it for I2V).

The tiny transformer's rotary table holds 32 positions per axis (at most 512 px a side), so
832×480 does not fit; the preset therefore carries its own sampling defaults
(:data:`TINY_DEFAULTS`: 112×64, the release's aspect ratio, 9 frames, 4 steps), which
``model.sample --base tiny`` and the tiny pipeline use when no size is given.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from model.pipeline import DEFAULTS, MagrefPipeline

TINY_DEFAULTS = replace(DEFAULTS, height=64, width=112, num_frames=9, num_inference_steps=4)

# A few words so the BPE learns real merges; every other string still tokenizes
# (byte-level alphabet), Chinese negative prompt included.
_CORPUS = [
    "a man and a woman walk a dog in the park, the man wears a red hat",
    "a girl holds a cat on the beach at sunset, the cat is orange",
    "a young woman stands in a studio with a white background",
    "a doctor talks to a patient; a car drives past a tree",
    "bright colors, overexposed, static, blurred details, subtitles, worst quality",
]

TINY_SEED = 0


def tiny_tokenizer() -> Any:
    """A fast tokenizer with offsets (needed for subject-word positions) and T5's specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    eos = tok.token_to_id("</s>")
    # T5 appends </s> to every sequence; the Wan text path relies on the attention mask.
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=True),
        processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)]),
    ])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=512,
    )


def tiny_components(device: str | torch.device = "cpu") -> Any:
    """The registry's tiny builder for ``video_backbone``: a ``MagrefPipeline`` on ``device``."""
    pipe = MagrefPipeline.from_components(tiny_wan_components(), device=device, dtype=torch.float32)
    pipe.defaults = TINY_DEFAULTS
    return pipe


def tiny_wan_components() -> dict[str, Any]:
    """Keyword arguments for ``WanImageToVideoPipeline`` / ``MagrefPipeline``, tiny and random."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        UMT5Config,
        UMT5EncoderModel,
    )

    torch.manual_seed(TINY_SEED)
    tokenizer = tiny_tokenizer()
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )).eval()
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=16,
    )).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
    )
    vae = AutoencoderKLWan(
        base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=36,
        out_channels=16, text_dim=32, freq_dim=16, ffn_dim=32, num_layers=2, image_dim=16,
        added_kv_proj_dim=16, rope_max_seq_len=32,
    ).eval()
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
        flow_shift=3.0,
    )
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, image_encoder=image_encoder,
                image_processor=image_processor, vae=vae, transformer=transformer,
                scheduler=scheduler)

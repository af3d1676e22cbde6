"""``MagrefPipeline``: references + prompt + subject words → video, on diffusers' Wan2.1 I2V.

Built from the unchanged Wan I2V components (``WanTransformer3DModel``, ``AutoencoderKLWan``,
UMT5 + tokenizer, CLIP vision encoder + processor, a flow scheduler), so a
``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`` directory or hub id loads as is; MAGREF adds the
canvas conditioning (Eq. 1-4, ``model.conditioning``), the subject-disentanglement hooks
(Eq. 5-6, ``model.disentangle``) and an optional checkpoint (``model.checkpoint``).

Defaults are the released inference's: 832×480, 81 frames, 40 UniPC steps with flow shift
3.0, text CFG 5.0 with Wan's negative prompt, seed 3407, the first 4 frames dropped (they
echo the canvas), 15 fps. On GPU the transformer and UMT5 run in bf16 and the VAE and CLIP
in fp32 (Wan's own recommendation). ``enable_low_memory`` adds model CPU offload and VAE
tiling + slicing so 480p runs on a single 40-48 GB card instead of the release's ~70 GB.

Classifier-free guidance and Eq. 6: the injection runs in the conditional branch only. The
injected v_i are the *positive* prompt's text values; the negative branch is the model's
text-free prediction (caption dropout in training has no subject words either), so it keeps
the canvas, mask and CLIP embedding but no subject binding, and guidance amplifies the
binding along with the rest of the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from model.conditioning import (Canvas, _module_device, check_video_size, compose_canvas,
                                denormalize_latents, encode_condition)
from model.disentangle import TEXT_LENGTH, SubjectDisentanglement, SubjectGuidance, clean_prompt
from model.velocity import magref_velocity

DEFAULT_BASE = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
# Wan2.1's own sample_neg_prompt, which the MAGREF release keeps.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


@dataclass(frozen=True)
class SamplingDefaults:
    """The released MAGREF inference settings; every field is a ``__call__`` / CLI override."""

    height: int = 480
    width: int = 832
    num_frames: int = 81
    num_inference_steps: int = 40
    guidance_scale: float = 5.0
    flow_shift: float = 3.0
    seed: int = 3407
    drop_first: int = 4
    fps: int = 15
    negative_prompt: str = WAN_NEGATIVE_PROMPT


DEFAULTS = SamplingDefaults()


@dataclass
class MagrefOutput:
    """Frames as uint8 [F, H, W, 3] (after ``drop_first``), the canvas, and final latents."""

    frames: np.ndarray | None
    canvas: Canvas
    latents: torch.Tensor


class MagrefPipeline(DiffusionPipeline):
    """Wan2.1 I2V components + MAGREF's canvas conditioning and subject disentanglement."""

    model_cpu_offload_seq = "text_encoder->image_encoder->transformer->vae"
    _optional_components = ["image_encoder", "image_processor"]

    def __init__(self, tokenizer: Any, text_encoder: Any, vae: Any, scheduler: Any,
                 transformer: Any, image_encoder: Any = None, image_processor: Any = None) -> None:
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                              scheduler=scheduler, transformer=transformer,
                              image_encoder=image_encoder, image_processor=image_processor)
        self.disentangler = SubjectDisentanglement.attach_to(transformer)

    @classmethod
    def from_components(cls, components: dict[str, Any], device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "MagrefPipeline":
        """Place components as Wan wants them: VAE and CLIP fp32, the rest in ``dtype``."""
        keep = ("tokenizer", "text_encoder", "vae", "scheduler", "transformer",
                "image_encoder", "image_processor")
        pipe = cls(**{k: components.get(k) for k in keep})
        for name, want in (("transformer", dtype), ("text_encoder", dtype),
                           ("vae", torch.float32), ("image_encoder", torch.float32)):
            module = getattr(pipe, name)
            if module is None:
                continue
            module.to(device)
            if module.dtype != want:  # from_pretrained(torch_dtype=) already kept fp32 parts
                module.to(dtype=want)
        return pipe

    def enable_low_memory(self, device: str | torch.device = "cuda") -> None:
        """Model CPU offload (one model on the GPU at a time) + tiled, sliced VAE."""
        self.enable_model_cpu_offload(device=device)
        self.vae.enable_tiling()
        self.vae.enable_slicing()

    def load_magref_checkpoint(self, path: str) -> dict[str, int]:
        from model.checkpoint import load_checkpoint

        return load_checkpoint(path, self.transformer, self.disentangler)

    # -- encoders ---------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str], max_length: int = TEXT_LENGTH) -> torch.Tensor:
        """UMT5 states [B, 512, C], zeroed past each prompt's length, as Wan I2V encodes."""
        texts = [clean_prompt(p) for p in prompts]
        enc = self.tokenizer(texts, padding="max_length", max_length=max_length, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        device = _module_device(self.text_encoder)
        states = self.text_encoder(enc.input_ids.to(device), enc.attention_mask.to(device)).last_hidden_state
        keep = enc.attention_mask.to(states.device, states.dtype)[..., None]
        return (states * keep).to(self._execution_device)

    @torch.no_grad()
    def encode_image(self, image: Image.Image) -> torch.Tensor | None:
        """CLIP penultimate hidden states of the canvas (Wan I2V's image context)."""
        if self.transformer.config.image_dim is None:
            return None
        if self.image_encoder is None or self.image_processor is None:
            raise ValueError("this Wan I2V transformer expects CLIP image embeddings, "
                             "but the pipeline has no image_encoder / image_processor")
        inputs = self.image_processor(images=image, return_tensors="pt")
        pixels = inputs["pixel_values"].to(_module_device(self.image_encoder), self.image_encoder.dtype)
        out = self.image_encoder(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[-2].to(self._execution_device)

    # -- sampling ---------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, refs: Sequence[Image.Image], prompt: str,
                 subjects: Sequence[tuple[str, int]] = (),
                 negative_prompt: str | None = DEFAULTS.negative_prompt,
                 height: int = DEFAULTS.height, width: int = DEFAULTS.width,
                 num_frames: int = DEFAULTS.num_frames,
                 num_inference_steps: int = DEFAULTS.num_inference_steps,
                 guidance_scale: float = DEFAULTS.guidance_scale,
                 flow_shift: float | None = DEFAULTS.flow_shift,
                 seed: int | None = DEFAULTS.seed, generator: torch.Generator | None = None,
                 drop_first: int = DEFAULTS.drop_first, output_type: str = "np",
                 latents: torch.Tensor | None = None) -> MagrefOutput:
        """Sample one video. ``subjects`` pairs subject words with reference indices (Eq. 6).

        ``num_frames`` is what Wan generates (4k+1); the returned video has
        ``num_frames - drop_first`` frames. ``output_type="latent"`` skips decoding.
        """
        check_video_size(height, width, num_frames)
        if not 0 <= drop_first < num_frames:
            raise ValueError(f"drop_first={drop_first} must be in [0, num_frames={num_frames})")
        device = self._execution_device
        canvas = compose_canvas(refs, height, width)
        guidance = (SubjectGuidance.build(self.tokenizer, prompt, subjects, canvas.subject_masks)
                    if subjects else None)
        use_cfg = guidance_scale > 1.0
        embeds = self.encode_prompt([prompt] + ([negative_prompt or ""] if use_cfg else []))
        prompt_embeds, negative_embeds = embeds[:1], embeds[1:]
        image_embeds = self.encode_image(canvas.image)
        condition = encode_condition(self.vae, canvas.image, canvas.region_mask, num_frames).to(device)

        if flow_shift is not None and "flow_shift" in self.scheduler.config \
                and self.scheduler.config.flow_shift != flow_shift:
            self.register_modules(scheduler=type(self.scheduler).from_config(
                self.scheduler.config, flow_shift=flow_shift))
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        if generator is None and seed is not None:
            generator = torch.Generator("cpu").manual_seed(seed)
        shape = (1, self.vae.config.z_dim, *condition.shape[2:])
        latents = (randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
                   if latents is None else latents.to(device, torch.float32))

        with self.progress_bar(total=len(self.scheduler.timesteps)) as bar:
            for t in self.scheduler.timesteps:
                timestep = t.expand(1)
                with self.transformer.cache_context("cond"):
                    velocity = magref_velocity(self.transformer, self.disentangler, latents,
                                               condition, timestep, prompt_embeds, image_embeds,
                                               guidance)
                if use_cfg:
                    with self.transformer.cache_context("uncond"):
                        uncond = magref_velocity(self.transformer, self.disentangler, latents,
                                                 condition, timestep, negative_embeds,
                                                 image_embeds, None)
                    velocity = uncond + guidance_scale * (velocity - uncond)
                latents = self.scheduler.step(velocity.float(), t, latents, return_dict=False)[0]
                bar.update()
        self.disentangler.set_guidance(None)

        frames = None
        if output_type != "latent":
            frames = self.decode(latents)[drop_first:]
        self.maybe_free_model_hooks()
        return MagrefOutput(frames=frames, canvas=canvas, latents=latents)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Normalised latents [1, 16, T, h, w] → uint8 frames [F, H, W, 3]."""
        vae_device = _module_device(self.vae)
        z = denormalize_latents(self.vae, latents.to(vae_device, self.vae.dtype))
        video = self.vae.decode(z, return_dict=False)[0][0]          # [3, F, H, W] in [-1, 1]
        video = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return video.permute(1, 2, 3, 0).cpu().numpy()


def load_components(source: str, device: str | None = None,
                    dtype: torch.dtype | None = None) -> MagrefPipeline:
    """The registry's loader for ``video_backbone``: a diffusers Wan I2V dir or hub id.

    ``dtype`` defaults to bf16 on GPU and fp32 on CPU; VAE and CLIP always load in fp32.
    """
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline
    from transformers import CLIPVisionModel

    from curation.models import pick_device

    device = pick_device(device)
    dtype = dtype or (torch.bfloat16 if str(device).startswith("cuda") else torch.float32)
    vae = AutoencoderKLWan.from_pretrained(source, subfolder="vae", torch_dtype=torch.float32)
    try:
        image_encoder = CLIPVisionModel.from_pretrained(source, subfolder="image_encoder",
                                                        dtype=torch.float32)
    except (OSError, ValueError):  # a T2V-style directory without an image encoder
        image_encoder = None
    wan = WanImageToVideoPipeline.from_pretrained(source, vae=vae, image_encoder=image_encoder,
                                                  torch_dtype=dtype)
    return MagrefPipeline.from_components(wan.components, device=device, dtype=dtype)

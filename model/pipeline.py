"""``MagrefPipeline``: references + prompt + subject words → video, on diffusers' Wan2.1 I2V.

Built from the unchanged Wan I2V components (``WanTransformer3DModel``, ``AutoencoderKLWan``,
UMT5 + tokenizer, CLIP vision encoder + processor, a flow scheduler), so a
``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`` directory or hub id loads as is; MAGREF adds the
canvas conditioning (Eq. 1-4, ``model.conditioning``), the subject-disentanglement hooks
(Eq. 5-6, ``model.disentangle``) and an optional checkpoint (``model.weights.checkpoint``).

Defaults are the released inference's (MAGREF-Video/MAGREF ``magref/subject2video.py``),
so the released weights see the inputs they were trained on: 832×480, 81 frames, 40 UniPC
steps on the release's timestep grid with flow shift 3.0, text CFG 5.0 with MAGREF's
negative prompt (Wan's with "镜头晃动，" in front), CLIP on the whole canvas squashed to a
square, seed 3407 (noise drawn on the GPU's generator when there is one, as the release
does), the first 4 frames dropped (they echo the canvas), 15 fps. diffusers' own choices stay
available: ``clip_input="crop"`` and ``timestep_grid="diffusers"``. On GPU the transformer
and UMT5 run in bf16 and the VAE and CLIP in fp32 (Wan's own recommendation).
``enable_low_memory`` adds model CPU offload and VAE tiling + slicing so 480p runs on a
single 40-48 GB card instead of the release's ~70 GB.

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

from curation.images import CLIP_MEAN, CLIP_STD
from curation.models import pick_device
from model.conditioning import (
    VAE_STRIDE,
    VAE_TEMPORAL_STRIDE,
    Canvas,
    ConditioningError,
    _module_device,
    check_video_size,
    clip_canvas_pixels,
    compose_canvas,
    denormalize_latents,
    encode_condition,
)
from model.disentangle import TEXT_LENGTH, SubjectDisentanglement, SubjectGuidance, clean_prompt
from model.velocity import magref_velocity
from model.weights.checkpoint import load_checkpoint

DEFAULT_BASE = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
# Wan2.1's own sample_neg_prompt.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
# The MAGREF release's config puts "camera shake," in front of Wan's negative prompt.
MAGREF_NEGATIVE_PROMPT = "镜头晃动，" + WAN_NEGATIVE_PROMPT
CLIP_INPUTS = ("squash", "crop")
TIMESTEP_GRIDS = ("release", "diffusers")


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
    negative_prompt: str = MAGREF_NEGATIVE_PROMPT


DEFAULTS = SamplingDefaults()


def release_sigmas(num_inference_steps: int, num_train_timesteps: int = 1000) -> np.ndarray:
    """The release's flow-UniPC sigma grid *before* the shift, for ``set_timesteps(sigmas=)``.

    Wan's ``FlowUniPCMultistepScheduler`` (``wan/utils/fm_solvers_unipc.py``, used unchanged
    by MAGREF with ``shift=1`` at construction) keeps ``sigma_max = 1 - 1/N`` (stored as
    float32, so 0.9990000128746033 for N = 1000) and ``sigma_min = 0``, and ``set_timesteps``
    takes ``linspace(sigma_max, sigma_min, steps + 1)[:-1]``, shifts it
    (``s' = shift * s / (1 + (shift - 1) * s)``), appends a final 0 and truncates
    ``s' * N`` to int64 timesteps. diffusers' ``UniPCMultistepScheduler`` with flow sigmas
    starts from ``linspace(1, 1/N)`` instead (40 steps at shift 3: last timestep 74, the
    release's 71), but given these sigmas it applies the same shift, final 0 and truncation,
    so the grid and the trajectory are the release's exactly.
    """
    sigma_max = float(np.float32(1.0 - 1.0 / num_train_timesteps))
    return np.linspace(sigma_max, 0.0, num_inference_steps + 1)[:-1].copy()


def check_rope_capacity(transformer: Any, height: int, width: int, num_frames: int) -> None:
    """Wan's rotary table holds ``rope_max_seq_len`` positions per axis; say which sizes fit.

    Past it diffusers fails deep inside the rotary embedding with a reshape error, so check
    first (the tiny test transformer holds 32 positions: at most 512 px a side).
    """
    limit = getattr(transformer.config, "rope_max_seq_len", None)
    if not limit:
        return
    p_t, p_h, p_w = transformer.config.patch_size
    t_lat = (num_frames - 1) // VAE_TEMPORAL_STRIDE + 1
    need = {"frames": t_lat // p_t, "height": height // VAE_STRIDE // p_h,
            "width": width // VAE_STRIDE // p_w}
    if max(need.values()) > limit:
        raise ConditioningError(
            f"{width}x{height} with {num_frames} frames needs {max(need.values())} rotary "
            f"positions along the {max(need, key=need.get)} but this transformer's "
            f"rope_max_seq_len is {limit}: use at most {limit * VAE_STRIDE * p_w} px wide, "
            f"{limit * VAE_STRIDE * p_h} px high and {(limit * p_t - 1) * VAE_TEMPORAL_STRIDE + 1} "
            f"frames")


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
        # Sizes, frames and steps used when a call leaves them out; ``tiny`` sets its own.
        self.defaults = DEFAULTS

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
            if module is None or module.device.type == "meta":  # a weightless placeholder stays
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

    def load_magref_checkpoint(self, path: str) -> dict[str, int | str]:
        """A MAGREF checkpoint file or folder (the release as shipped included), fully covered."""
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

    def clip_pixel_values(self, image: Image.Image, clip_input: str = "squash") -> torch.Tensor:
        """[1, 3, S, S] CLIP input for the canvas.

        ``"squash"`` (default) is the release's: the whole canvas resized to the encoder's
        square (:func:`model.conditioning.clip_canvas_pixels`), normalised with the
        processor's mean/std. ``"crop"`` is diffusers' Wan I2V pipeline: the image processor's
        shortest-edge resize and centre crop, which on an 832×480 canvas drops the outer
        references.
        """
        if clip_input == "squash":
            if self.image_encoder is None:
                raise ValueError("clip_input='squash' needs the pipeline's image_encoder")
            mean = getattr(self.image_processor, "image_mean", None) or CLIP_MEAN
            std = getattr(self.image_processor, "image_std", None) or CLIP_STD
            return clip_canvas_pixels(image, self.image_encoder.config.image_size, mean, std)
        if clip_input == "crop":
            if self.image_processor is None:
                raise ValueError("clip_input='crop' needs the pipeline's image_processor")
            return self.image_processor(images=image, return_tensors="pt")["pixel_values"]
        raise ValueError(f"clip_input={clip_input!r}: choose one of {CLIP_INPUTS}")

    @torch.no_grad()
    def encode_image(self, image: Image.Image, clip_input: str = "squash") -> torch.Tensor | None:
        """CLIP penultimate hidden states of the canvas (Wan I2V's image context).

        The release calls its ViT-H with ``use_31_block=True``: the output of block 31 of 32,
        which is ``hidden_states[-2]`` of transformers' ``CLIPVisionModel``.
        """
        if self.transformer.config.image_dim is None:
            return None
        if self.image_encoder is None:
            raise ValueError("this Wan I2V transformer expects CLIP image embeddings, "
                             "but the pipeline has no image_encoder")
        pixels = self.clip_pixel_values(image, clip_input)
        pixels = pixels.to(_module_device(self.image_encoder), self.image_encoder.dtype)
        out = self.image_encoder(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[-2].to(self._execution_device)

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str,
                      timestep_grid: str = "release") -> None:
        """Put the scheduler on the release's grid (:func:`release_sigmas`) or on its own."""
        if timestep_grid == "diffusers":
            self.scheduler.set_timesteps(num_inference_steps, device=device)
            return
        if timestep_grid != "release":
            raise ValueError(f"timestep_grid={timestep_grid!r}: choose one of {TIMESTEP_GRIDS}")
        train_steps = self.scheduler.config.get("num_train_timesteps", 1000)
        try:
            self.scheduler.set_timesteps(sigmas=release_sigmas(num_inference_steps, train_steps),
                                         device=device)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{type(self.scheduler).__name__} cannot take the release's sigma "
                             f"grid ({exc}); use timestep_grid='diffusers'") from exc

    # -- sampling ---------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, refs: Sequence[Image.Image], prompt: str,
                 subjects: Sequence[tuple[str, int]] = (),
                 negative_prompt: str | None = DEFAULTS.negative_prompt,
                 height: int | None = None, width: int | None = None,
                 num_frames: int | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float = DEFAULTS.guidance_scale,
                 flow_shift: float | None = DEFAULTS.flow_shift,
                 seed: int | None = DEFAULTS.seed, generator: torch.Generator | None = None,
                 drop_first: int = DEFAULTS.drop_first, output_type: str = "np",
                 latents: torch.Tensor | None = None, clip_input: str = "squash",
                 timestep_grid: str = "release", shuffle_seed: int | None = None) -> MagrefOutput:
        """Sample one video. ``subjects`` pairs subject words with reference indices (Eq. 6).

        ``num_frames`` is what Wan generates (4k+1); the returned video has
        ``num_frames - drop_first`` frames. ``output_type="latent"`` skips decoding. Height,
        width, frames and steps left out come from ``self.defaults`` (the release's; tiny
        components carry sizes their small rotary table holds). ``shuffle_seed`` deals the
        references to random cells as the release does at every call (it uses an unseeded
        RNG); without it reference k takes cell k, so layouts are deterministic.
        """
        d = self.defaults
        height = d.height if height is None else height
        width = d.width if width is None else width
        num_frames = d.num_frames if num_frames is None else num_frames
        num_inference_steps = (d.num_inference_steps if num_inference_steps is None
                               else num_inference_steps)
        check_video_size(height, width, num_frames)
        check_rope_capacity(self.transformer, height, width, num_frames)
        if not 0 <= drop_first < num_frames:
            raise ValueError(f"drop_first={drop_first} must be in [0, num_frames={num_frames})")
        if clip_input not in CLIP_INPUTS or timestep_grid not in TIMESTEP_GRIDS:
            raise ValueError(f"clip_input must be one of {CLIP_INPUTS} and timestep_grid one of "
                             f"{TIMESTEP_GRIDS}; got {clip_input!r}, {timestep_grid!r}")
        device = self._execution_device
        rng = None if shuffle_seed is None else np.random.default_rng(shuffle_seed)
        canvas = compose_canvas(refs, height, width, rng=rng)
        guidance = (SubjectGuidance.build(self.tokenizer, prompt, subjects, canvas.subject_masks)
                    if subjects else None)
        use_cfg = guidance_scale > 1.0
        embeds = self.encode_prompt([prompt] + ([negative_prompt or ""] if use_cfg else []))
        prompt_embeds, negative_embeds = embeds[:1], embeds[1:]
        image_embeds = self.encode_image(canvas.image, clip_input)
        condition = encode_condition(self.vae, canvas.image, canvas.region_mask, num_frames).to(device)

        if flow_shift is not None and "flow_shift" in self.scheduler.config \
                and self.scheduler.config.flow_shift != flow_shift:
            self.register_modules(scheduler=type(self.scheduler).from_config(
                self.scheduler.config, flow_shift=flow_shift))
        self.set_timesteps(num_inference_steps, device, timestep_grid)
        if generator is None and seed is not None:
            # The release draws its noise with torch.Generator on the GPU; a CUDA generator
            # with the same seed gives the same numbers (the shape has the same element order).
            on_gpu = torch.device(device).type == "cuda"
            generator = torch.Generator(device if on_gpu else "cpu").manual_seed(seed)
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


def load_components(source: str, device: str | None = None, dtype: torch.dtype | None = None,
                    transformer: Any = None) -> MagrefPipeline:
    """The registry's loader for ``video_backbone``: a diffusers Wan I2V dir or hub id.

    ``dtype`` defaults to bf16 on GPU and fp32 on CPU; VAE and CLIP always load in fp32.
    ``transformer`` replaces the one in ``source`` (``model.train.latents.load_encoders`` passes a
    weightless placeholder, so the latent cache never loads 14B weights it does not use).
    """
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline
    from transformers import CLIPVisionModel

    device = pick_device(device)
    dtype = dtype or (torch.bfloat16 if str(device).startswith("cuda") else torch.float32)
    vae = AutoencoderKLWan.from_pretrained(source, subfolder="vae", torch_dtype=torch.float32)
    try:
        image_encoder = CLIPVisionModel.from_pretrained(source, subfolder="image_encoder",
                                                        dtype=torch.float32)
    except (OSError, ValueError):  # a T2V-style directory without an image encoder
        image_encoder = None
    given = {} if transformer is None else {"transformer": transformer}
    wan = WanImageToVideoPipeline.from_pretrained(source, vae=vae, image_encoder=image_encoder,
                                                  torch_dtype=dtype, **given)
    return MagrefPipeline.from_components(wan.components, device=device, dtype=dtype)

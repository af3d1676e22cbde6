"""Subject-centric clip captions with Qwen2.5-VL (MAGREF Appendix B.1).

The clip goes to the model as a *video*: ``frames`` frames sampled evenly over the
clip, decoded straight to the model's input size (swscale, bicubic), with the clip's
real frame spacing in ``second_per_grid_ts`` so Qwen2.5-VL's time-aligned positions
see real time. The prompt asks for the subjects' appearance, their actions and how
they change over time, the environment and the camera motion, and a last line
``Subjects: a, b, c`` that becomes the ``subjects`` column (stage 2's object labels
and the model's subject words). A model that writes no such line gives ``[]``.

Video preprocessing: transformers' ``Qwen2VLVideoProcessor`` where torchvision runs, and
where it does not (PyPI's torchvision does not import beside the CPU torch we run on) our
``patchify_videos``, the same small maths fixed by the model (CLIP mean/std, 2x14x14
patches merged 2x2) in the processor's exact patch layout; ``curation/processors.py``
decides which. The chat text comes from the tokenizer's own chat template.

The frames are decoded *before* this step, on CPUs, by ``curation.frames.FrameReader``
with the request ``frame_request(config)`` builds, and arrive in the ``FRAMES`` column:
the GPU actor never waits on FFmpeg. Generation is batched: one Ray batch
(``caption.pool.batch_size`` clips) is one ``generate`` call (left padding, greedy).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curation import processors
from curation.envelope import put_column, run_isolated
from curation.frames import FRAMES, ClipFrames, FrameRequest, decode_frames, drop_frames, uniform
from curation.images import CLIP_MEAN, CLIP_STD
from curation.models import default_dtype, load
from curation.operator import ActorPool, TaskPool, setting
from schemas.tables import CLIPS

SYSTEM = "You are a helpful assistant."  # the system turn Qwen's chat template adds
PROMPT = (
    "Describe this video clip for training a video generation model. Focus on the main subjects "
    "(people, animals, objects): their appearance (clothing, colours, shapes), what they do, and how "
    "they or their positions change over time. Then briefly describe the environment and the camera "
    "motion (static, pan, tilt, zoom, tracking). Write one paragraph of plain sentences. "
    "On a last separate line write 'Subjects:' followed by a comma-separated list of at most "
    "{max_subjects} short nouns naming the main subjects, e.g. 'Subjects: woman, dog, red car'."
)
_SUBJECTS_LINE = re.compile(r"^\W*subjects?\W*:\s*(.*)$", re.IGNORECASE)
_WORD = re.compile(r"^[a-z][a-z' -]{0,38}[a-z]$")


@dataclass
class CaptionConfig:
    enabled: bool = setting(True, help="False: clips are scored and filtered, captions left null")
    frames: int = setting(16, help="sampled evenly over the clip; even, since Qwen2.5-VL pairs frames")
    min_pixels: int = setting(4 * 28 * 28, help="per frame, after Qwen's resize to multiples of 28")
    max_pixels: int = setting(448 * 252, help="per frame; ~144 visual tokens per frame pair")
    max_new_tokens: int = setting(256, help="caption length cap (greedy decoding)")
    max_subjects: int = setting(8, help="nouns kept from the Subjects: line")
    prompt: str = setting(PROMPT, help="the instruction; {max_subjects} is filled in")
    pool: ActorPool = setting(factory=lambda: ActorPool(actors=1, batch_size=4, num_cpus=0.5, num_gpus=1.0), help=
        "batch_size = clips per generate call; one GPU per actor when the job uses GPUs (--gpus)")
    decode_pool: TaskPool = setting(factory=lambda: TaskPool(batch_size=4, num_cpus=0.5), help=
        "the CPU step before it that decodes the clips' frames (Ray tasks)")

    def __post_init__(self) -> None:
        if self.frames < 2 or self.frames % 2:
            raise ValueError(f"caption.frames must be an even number >= 2, got {self.frames}")
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}")
        if min(self.max_new_tokens, self.max_subjects) < 1:
            raise ValueError("max_new_tokens and max_subjects must be >= 1")


@dataclass
class CaptionModel:
    """What the registry builds for the ``captioner`` role: model + tokenizer + its numbers."""

    model: Any  # Qwen2_5_VLForConditionalGeneration
    tokenizer: Any  # left-padding tokenizer with Qwen's special tokens
    device: str
    dtype: Any

    @property
    def vision(self) -> Any:
        return self.model.config.vision_config


def smart_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's ``smart_resize``: sides multiples of ``factor``, area within bounds, aspect kept."""
    h_bar, w_bar = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def video_inputs(videos: list[np.ndarray], vision: Any) -> tuple[Any, Any]:
    """``pixel_values_videos`` and ``video_grid_thw`` for (T, H, W, 3) uint8 clips already at a
    ``smart_size``: ``Qwen2VLVideoProcessor``'s where torchvision runs, else ours (one switch,
    ``curation/processors.py``)."""
    if processors.use_official():
        return processors.qwen_video_inputs(videos, vision)
    return patchify_videos(videos, vision)


def patchify_videos(videos: list[np.ndarray], vision: Any) -> tuple[Any, Any]:
    """Ours: the same layout as ``Qwen2VLVideoProcessor.patchify`` (no resize: frames arrive sized).

    Stands in for ``Qwen2VLVideoProcessor``, which needs torchvision (it does not import
    beside the CPU torch here); tests/test_preprocessing_parity.py checks it equals
    ``Qwen2VLImageProcessorPil`` on a clip of identical frames, and the video processor itself
    where torchvision runs."""
    import torch

    patch, merge, temporal = vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    flat, grids = [], []
    for video in videos:
        x = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2).float().div(255.0)
        x = (x - mean) / std
        if pad := -x.shape[0] % temporal:
            x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
        t, c, h, w = x.shape
        gt, gh, gw = t // temporal, h // patch, w // patch
        x = x.view(gt, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        flat.append(x.reshape(gt * gh * gw, c * temporal * patch * patch))
        grids.append([gt, gh, gw])
    return torch.cat(flat), torch.tensor(grids, dtype=torch.long)


def chat_prompt(tokenizer: Any, prompt: str, video_tokens: int = 0) -> str:
    """One user turn (one video, if ``video_tokens``, then the prompt) through the model's own
    chat template (``apply_chat_template``), ready for generation.

    The template writes one ``<|video_pad|>`` per video; like ``Qwen2VLProcessor`` we repeat
    it once per merged vision patch (the processor's text half: its video half is
    ``video_inputs``, and ``Qwen2VLProcessor`` as a whole needs torchvision).
    """
    content = ([{"type": "video"}] if video_tokens else []) + [{"type": "text", "text": prompt}]
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)
    return text.replace(VIDEO_PAD, VIDEO_PAD * video_tokens, 1) if video_tokens else text


def split_subjects(text: str, limit: int) -> tuple[str, list[str]]:
    """The caption without its ``Subjects:`` line, and the subject nouns (never raises)."""
    lines = (text or "").strip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        match = _SUBJECTS_LINE.match(lines[i].strip())
        if match:
            words: list[str] = []
            for item in re.split(r"[,;/]|\band\b", match.group(1)):
                word = re.sub(r"^(a|an|the)\s+", "", item.strip(" \t.*_`\"'").lower())
                if _WORD.match(word) and len(word.split()) <= 3 and word not in words:
                    words.append(word)
            caption = "\n".join(lines[:i] + lines[i + 1:]).strip()
            return caption, words[:limit]
    return "\n".join(lines).strip(), []


# Qwen2.5-VL's vision tower: 14 px patches merged 2x2, so frame sides are multiples of 28.
PATCH_FACTOR = 28


def frame_request(config: CaptionConfig) -> FrameRequest:
    """What ``FrameReader`` decodes for the captioner: ``frames`` frames evenly over the clip,
    straight to Qwen2.5-VL's input size (bicubic, as its processor resizes)."""
    def size(width: int, height: int) -> tuple[int, int]:
        h, w = smart_size(height, width, PATCH_FACTOR, config.min_pixels, config.max_pixels)
        return w, h

    return uniform(config.frames, size=size, interpolation="BICUBIC")


def as_video(frames: ClipFrames, count: int) -> tuple[np.ndarray, float]:
    """(T, H, W, 3) frames and the seconds between them; a clip with fewer distinct frames
    than asked repeats its last one so every clip has ``count`` frames (Qwen pairs them)."""
    images = frames.images
    if len(images) < count:
        images = np.concatenate([images, np.repeat(images[-1:], count - len(images), axis=0)])
    spacing = float(frames.times[-1] - frames.times[0]) / max(len(frames) - 1, 1) if len(frames) > 1 else 0.0
    return images, spacing


class Captioner:
    """Stage 1, step 3: caption + subjects for every live clip; settled rows pass through.

    Reads the decoded frames from ``FRAMES`` and drops the column. A batch is one
    ``generate`` call; if it raises, ``run_isolated`` retries clip by clip, and a clip that
    still fails makes its whole video one error row (one input, one place).
    """

    def __init__(self, config: CaptionConfig, models: Any = None, device: str | None = None,
                 model: CaptionModel | None = None):
        self.config = config
        self.captioner = model or load("captioner", models, device=device)
        self.generate_calls = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        result = run_isolated(batch, self._caption, CLIPS)
        return drop_frames(result)

    def _caption(self, live: pa.Table) -> pa.Table:
        if FRAMES not in live.column_names:
            raise KeyError(f"the captioner needs the {FRAMES!r} column: put curation.frames.FrameReader "
                           "with caption.frame_request(config) before it")
        videos = [as_video(decode_frames(blob), self.config.frames) for blob in live.column(FRAMES).to_pylist()]
        captions, subjects = [], []
        for text in self.generate(videos):
            caption, words = split_subjects(text, self.config.max_subjects)
            captions.append(caption)
            subjects.append(words)
        live = put_column(live, "caption", pa.array(captions, pa.string()))
        return put_column(live, "subjects", pa.array(subjects, pa.list_(pa.string())))

    def generate(self, videos: list[tuple[np.ndarray, float]]) -> list[str]:
        """One ``generate`` call for several clips: ``(frames, seconds between frames)`` each."""
        import torch

        c = self.captioner
        self.generate_calls += 1
        pixels, grids = video_inputs([v for v, _ in videos], c.vision)
        merge = c.vision.spatial_merge_size ** 2
        prompt = self.config.prompt.format(max_subjects=self.config.max_subjects)
        texts = [chat_prompt(c.tokenizer, prompt, int(g.prod()) // merge) for g in grids]
        inputs = c.tokenizer(texts, padding=True, return_tensors="pt").to(c.device)
        seconds = [c.vision.temporal_patch_size * spacing for _, spacing in videos]
        with torch.inference_mode():
            out = c.model.generate(**inputs, pixel_values_videos=pixels.to(c.device, c.dtype),
                                   video_grid_thw=grids.to(c.device),
                                   second_per_grid_ts=torch.tensor(seconds, device=c.device),
                                   max_new_tokens=self.config.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in c.tokenizer.batch_decode(new, skip_special_tokens=True)]


# ---------------------------------------------------------------------------
# Registry builders: the real checkpoint, and the same class from a tiny config.
# ---------------------------------------------------------------------------

VIDEO_PAD = "<|video_pad|>"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", VIDEO_PAD]
# Qwen2-VL / Qwen2.5-VL's chat template as the hub checkpoints ship it (tokenizer_config.json,
# chat_template.json), given to the tiny tokenizer, which has no hub files; real checkpoints
# use their own. Data, not code: the format lives in the template.
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def load_captioner(source: str, device: str, dtype: Any = None) -> CaptionModel:
    """Qwen2.5-VL from a hub id or a local folder: bf16 on GPU, float32 on CPU."""
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    dtype = default_dtype(device, dtype)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left")
    return CaptionModel(model, tokenizer, device, dtype)


def tiny_tokenizer():
    """A byte-level BPE trained on a few sentences, with Qwen's special tokens (offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [PROMPT, SYSTEM, "Subjects: woman, dog, red car", "A man walks a dog in a park. The camera pans left."]
    tok.train_from_iterator(corpus * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left", chat_template=QWEN_VL_CHAT_TEMPLATE)


def tiny_captioner(device: str) -> CaptionModel:
    """``Qwen2_5_VLForConditionalGeneration`` from a small random config (FACTS.md numbers)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 2, 4], "rope_theta": 10000.0},
                         bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[1], patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                           window_size=56, tokens_per_second=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    model = Qwen2_5_VLForConditionalGeneration(config).to(device).eval()
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    return CaptionModel(model, tokenizer, device, torch.float32)

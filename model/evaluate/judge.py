"""GmeScore (paper; OpenS2V ``gme_score``) and OpenS2V's NaturalScore, both on a Qwen-VL model.

* GmeScore: GME (Zhang et al. 2024) is Qwen2-VL fine-tuned for retrieval; an input's
  embedding is the last token's final hidden state, L2-normed. The score is the mean over
  sampled frames of cosine(prompt embedding, frame embedding). Role ``gme``
  (``Alibaba-NLP/gme-Qwen2-VL-2B-Instruct``); ``tiny`` is the captioner's tiny Qwen2.5-VL.
  A frame goes in as a one-frame video (Qwen-VL duplicates an image to its temporal patch
  of 2 the same way), through the captioner's own patchifier.
* NaturalScore: OpenS2V asks GPT-4o to rate naturalness 1-5, three times. We ask an open
  VLM, the ``captioner`` role (stage 1's Qwen2.5-VL, through its ``Captioner.generate``),
  the same 1-5 question on three disjoint frame subsets, greedy; the first digit 1-5 of the
  answer is the score. A substitute judge: its numbers are not GPT-4o's.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from curation.clips.caption import (
    PATCH_FACTOR,
    CaptionConfig,
    Captioner,
    CaptionModel,
    smart_size,
    video_inputs,
)
from curation.models import TINY, default_dtype
from model.evaluate.base import Metric, NotScored, cosine
from model.evaluate.entries import Entry
from model.evaluate.video import VideoFrames

GME_QUERY = "Find an image that matches the given text."
TINY_PIXELS = 16384


def _resize(frame: np.ndarray, max_pixels: int) -> np.ndarray:
    h, w = smart_size(frame.shape[0], frame.shape[1], PATCH_FACTOR, 4 * 28 * 28, max_pixels)
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_CUBIC)


class Gme:
    """Text and image embeddings from a Qwen-VL model (GME's recipe: last token, L2-normed)."""

    def __init__(self, vlm, max_pixels: int):
        self.vlm = vlm
        self.max_pixels = max_pixels

    def _last_token(self, texts: list[str], **vision) -> np.ndarray:
        import torch

        v = self.vlm
        inputs = v.tokenizer(texts, padding=True, return_tensors="pt").to(v.device)
        with torch.inference_mode():
            out = v.model(**inputs, **vision, output_hidden_states=True)
        last = out.hidden_states[-1][:, -1].float()  # left padding: the last position is the last token
        return (last / last.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()

    def embed_text(self, text: str) -> np.ndarray:
        chat = (f"<|im_start|>system\n{GME_QUERY}<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n"
                "<|im_start|>assistant\n<|endoftext|>")
        return self._last_token([chat])

    def embed_frames(self, frames: list[np.ndarray]) -> np.ndarray:
        v = self.vlm
        vision_cfg = v.model.config.vision_config
        out = []
        for frame in frames:
            pixels, grids = video_inputs([_resize(frame, self.max_pixels)[None]], vision_cfg)
            tokens = int(grids.prod()) // vision_cfg.spatial_merge_size ** 2
            chat = (f"<|im_start|>system\nRepresent the given image.<|im_end|>\n<|im_start|>user\n"
                    f"<|vision_start|>{'<|video_pad|>' * tokens}<|vision_end|><|im_end|>\n"
                    "<|im_start|>assistant\n<|endoftext|>")
            out.append(self._last_token([chat], pixel_values_videos=pixels.to(v.device, v.dtype),
                                        video_grid_thw=grids.to(v.device)))
        return np.concatenate(out)


def load_gme(source: str, device: str, dtype=None):
    """GME's Qwen2-VL checkpoint through the captioner's loader types (model + left-padding tokenizer)."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    dtype = default_dtype(device, dtype)
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype).to(device).eval()
    return CaptionModel(model, AutoTokenizer.from_pretrained(source, padding_side="left"), device, dtype)


class GmeScore(Metric):
    name = "gme_score"
    outputs = ("gme_score",)
    roles = ("gme",)

    def __init__(self, models=None, device=None, max_pixels: int = 448 * 448):
        super().__init__(models, device)
        tiny = self.sources["gme"] == TINY
        self.gme = Gme(self.load("gme"), TINY_PIXELS if tiny else max_pixels)

    def score(self, entry: Entry, video: VideoFrames) -> dict[str, float]:
        if not entry.prompt.strip():
            raise NotScored("no_prompt")
        text = self.gme.embed_text(entry.prompt)
        return {"gme_score": float(cosine(self.gme.embed_frames(list(video.sampled)), text).mean())}


JUDGE_PROMPT = (
    "Rate how natural this generated video looks on a scale from 1 to 5: 5 means it looks like a real "
    "video (realistic anatomy, physics, lighting, no artefacts), 1 means it is clearly unnatural "
    "(distorted bodies or objects, impossible motion, flicker). Answer with one digit only.")


def parse_rating(text: str) -> int | None:
    found = re.search(r"[1-5]", text)
    return int(found.group()) if found else None


class NaturalScore(Metric):
    name = "natural_score"
    outputs = ("naturalscore_1", "naturalscore_2", "naturalscore_3")
    roles = ("captioner",)
    judgements = 3

    def __init__(self, models=None, device=None, frames: int = 4):
        super().__init__(models, device)
        tiny = self.sources["captioner"] == TINY
        self.frames = frames
        self.judge = Captioner(CaptionConfig(prompt=JUDGE_PROMPT, max_new_tokens=8, frames=frames,
                                             max_pixels=TINY_PIXELS if tiny else 448 * 252),
                               model=self.load("captioner"))

    def score(self, entry: Entry, video: VideoFrames) -> dict[str, float]:
        frames = video.sampled
        subsets = [frames[i::self.judgements] for i in range(self.judgements)]
        videos = []
        for subset in subsets:
            subset = subset if len(subset) else frames
            picks = np.linspace(0, len(subset) - 1, self.frames).round().astype(int)
            clip = np.stack([_resize(subset[i], self.judge.config.max_pixels) for i in picks])
            videos.append((clip, 1.0))
        ratings = [parse_rating(text) for text in self.judge.generate(videos)]
        if all(r is None for r in ratings):
            raise NotScored("judge_gave_no_rating", "the VLM's answers hold no digit 1-5")
        return {f"naturalscore_{i + 1}": float(r) for i, r in enumerate(ratings) if r is not None}


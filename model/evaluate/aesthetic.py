"""Aesthetic score (paper Eq. 21; OpenS2V's ``aes_score``): the LAION improved-aesthetic head on
CLIP ViT-L/14, averaged over the sampled frames. The model is stage 1's ``aesthetic`` role
(``curation/clips/quality.py``), so curation and evaluation score frames the same way."""

from __future__ import annotations

import numpy as np

from model.evaluate.base import Metric
from model.evaluate.entries import Entry
from model.evaluate.video import VideoFrames


class Aesthetic(Metric):
    name = "aesthetic"
    outputs = ("aesthetic",)
    roles = ("aesthetic",)

    def __init__(self, models=None, device=None):
        super().__init__(models, device)
        self.predictor = self.load("aesthetic")

    def score(self, entry: Entry, video: VideoFrames) -> dict[str, float]:
        return {"aesthetic": float(np.mean(self.predictor.score(list(video.sampled), batch=8)))}

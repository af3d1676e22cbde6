"""Subj-Sim (paper Eq. 22-23), Bg-Sim (Eq. 24-25) and OpenS2V's NexusScore, on DINO embeddings.

* Subj-Sim: for each labelled subject reference, its region on every sampled frame
  (``regions.RegionFinder``: GroundingDINO + SAM2 on its label) is cut out over white and
  DINO-embedded; the cosine with the reference's embedding is averaged over the sampled
  frames, a frame where the subject is not found counting 0 (it failed to show it).
* Bg-Sim: every subject region of a frame is inpainted away (OpenCV Telea, stage 4's
  ``background.backend=opencv``; the paper uses SDXL inpainting, our ``inpainter`` role), and
  the result's DINO embedding is compared with the background reference.
* NexusScore: OpenS2V detects each class label with YOLO-World (AGPL) and scores the crops
  against the reference with GME retrieval; we detect with GroundingDINO (boxes only, no
  SAM2) and compare crops with DINO, averaging over frames where the label was detected.
  Not numerically their score: their merge clips it to [0, 0.05], ours is a cosine.
"""

from __future__ import annotations

import numpy as np

from curation.pairs.backgrounds import inpaint_opencv
from model.evaluate.base import Metric, MetricUnavailable, NotScored, cosine
from model.evaluate.entries import BACKGROUND, FACE, OBJECT, SUBJECT, Entry
from model.evaluate.regions import RegionFinder, Regions, region_crop
from model.evaluate.video import VideoFrames


def subject_references(entry: Entry) -> list:
    return [r for r in entry.refs if r.kind in (FACE, OBJECT, SUBJECT) and r.label]


class _DinoMetric(Metric):
    """DINO embeddings of subject regions: found by GroundingDINO + SAM2, or supplied.

    ``build_metrics`` hands the three DINO metrics one ``RegionFinder`` and one DINO model,
    so the detectors load once and a video's regions are found once (the finder keeps the
    last answer)."""

    def __init__(self, models=None, device=None, regions: Regions | None = None, dino=None):
        if regions is None:
            try:
                regions = RegionFinder(models, device)
            except (OSError, ImportError, ValueError) as exc:
                raise MetricUnavailable(f"metric {self.name} skipped: GroundingDINO/SAM2 (roles grounding, "
                                        f"segmenter) unavailable ({type(exc).__name__}); supply them with "
                                        "--models grounding=DIR --models segmenter=DIR") from exc
        self.roles = ("dino", *getattr(regions, "roles", ()))
        super().__init__(models, device)
        self.dino = dino or self.load("dino")
        self.regions = regions


def subject_similarity(dino, references: list, frames: list[np.ndarray], regions: list[dict]) -> float:
    """Eq. 22-23 for every labelled reference, averaged over references."""
    per_ref = []
    for ref in references:
        target = dino.embed([ref.image])
        crops = [region_crop(frame, found[ref.label]) if ref.label in found else None
                 for frame, found in zip(frames, regions)]
        present = [c for c in crops if c is not None]
        sims = cosine(dino.embed(present), target)[:, 0] if present else np.zeros(0)
        per_ref.append(float(sims.sum() / len(frames)))  # a frame without the subject counts 0
    return float(np.mean(per_ref))


def background_similarity(dino, background: np.ndarray, frames: list[np.ndarray], regions: list[dict]) -> float:
    """Eq. 24-25: subjects inpainted out of each frame, DINO cosine with the background reference."""
    cleaned = []
    for frame, found in zip(frames, regions):
        hole = np.zeros(frame.shape[:2], bool)
        for mask in found.values():
            hole |= mask
        cleaned.append(inpaint_opencv(frame, hole.astype(np.uint8) * 255) if hole.any() else frame)
    return float(cosine(dino.embed(cleaned), dino.embed([background]))[:, 0].mean())


class SubjectSimilarity(_DinoMetric):
    name = "subj_sim"
    outputs = ("subj_sim",)

    def score(self, entry: Entry, video: VideoFrames) -> dict[str, float]:
        refs = subject_references(entry)
        if not refs:
            raise NotScored("no_labelled_subject", "no reference has a label to look for")
        frames = list(video.sampled)
        found = self.regions(frames, [r.label for r in refs])
        return {"subj_sim": subject_similarity(self.dino, refs, frames, found)}


class BackgroundSimilarity(_DinoMetric):
    name = "bg_sim"
    outputs = ("bg_sim",)

    def score(self, entry: Entry, video: VideoFrames) -> dict[str, float]:
        backgrounds = entry.of_kind(BACKGROUND)
        if not backgrounds:
            raise NotScored("no_background_reference")
        frames = list(video.sampled)
        labels = [r.label for r in subject_references(entry)]
        found = self.regions(frames, labels) if labels else [{} for _ in frames]
        return {"bg_sim": background_similarity(self.dino, backgrounds[0].image, frames, found)}


class NexusScore(_DinoMetric):
    name = "nexus_score"
    outputs = ("nexus_score",)

    def __init__(self, models=None, device=None, regions: Regions | None = None, dino=None):
        super().__init__(models, device, regions, dino)
        self.finder = self.regions if isinstance(self.regions, RegionFinder) else None

    def score(self, entry: Entry, video: VideoFrames) -> dict[str, float]:
        refs = subject_references(entry)
        if not refs:
            raise NotScored("no_labelled_subject")
        frames = list(video.sampled)
        if self.finder is None:  # supplied regions: their bounding boxes stand for detections
            boxes = [{k: _mask_box(m) for k, m in found.items()} for found in self.regions(frames, [r.label for r in refs])]
        else:
            boxes = self.finder.boxes(frames, [r.label for r in refs])
        scores = []
        for ref in refs:
            target = self.dino.embed([ref.image])
            crops = []
            for frame, found in zip(frames, boxes):
                for x0, y0, x1, y1 in np.atleast_2d(found.get(ref.label, np.zeros((0, 4)))).astype(int):
                    if x1 > x0 and y1 > y0:
                        crops.append(frame[max(y0, 0):y1, max(x0, 0):x1])
            if crops:
                scores.append(float(cosine(self.dino.embed(crops), target).mean()))
        return {"nexus_score": float(np.mean(scores)) if scores else 0.0}


def _mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return np.zeros((0, 4), np.float32)
    return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)

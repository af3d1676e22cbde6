"""Subj-Sim (paper Eq. 22-23), Bg-Sim (Eq. 24-25) and OpenS2V's NexusScore, on DINO embeddings.

* Subj-Sim: for each labelled subject reference, its region on every sampled frame
  (``regions.RegionFinder``: GroundingDINO + SAM2 on its label) is cut out over white and
  DINO-embedded; the cosine with the reference's embedding is averaged over the sampled
  frames, a frame where the subject is not found counting 0 (it failed to show it).
* Bg-Sim: every subject region of a frame is removed as stage 4 removes subjects for its
  backgrounds (``curation.pairs.backgrounds.remove_subjects``): by the ``inpainter`` role
  (SDXL inpainting, the paper's) with ``evaluate.bg_inpaint=model``, or by OpenCV Telea
  (``opencv``, the default: no weights, deterministic, fast); the result's DINO embedding is
  compared with the background reference.
* NexusScore, in OpenS2V's form (``get_nexusscore.py``): on 32 sampled frames they detect
  every reference with YOLO-World (AGPL; image-prompted, boxes kept above confidence 0.6)
  and embed each box crop with GME-Qwen2-VL-7B; a crop counts when its GME text score with
  the label is above 0.30; the score is the mean over counted crops of the crop-reference
  GME cosine *divided by the number of frames with any detection* (``frame_obj``), hence
  their merge's range [0, 0.05] (a cosine near 0.6 over ~12-32 frames). We detect with
  GroundingDINO on the label (boxes only, no SAM2, its own thresholds, no text-score gate)
  and embed crops with DINO; ``nexus_score`` = mean crop-reference cosine over all crops /
  (frames with a detection x 32 / sampled frames), i.e. their division rescaled to their 32
  frames so that our ``evaluate.frames`` (8) gives the same magnitude. On their scale and
  merged with their range, but with other detector and embedder: a substitute, not their
  value. ``nexus_similarity`` is the plain mean cosine (0-1, readable on its own).
"""

from __future__ import annotations

import numpy as np

from curation.models import ModelSourceError, resolve
from curation.pairs.backgrounds import BackgroundConfig, remove_subjects
from model.evaluate.base import Metric, MetricUnavailable, NotScored, cosine
from model.evaluate.entries import BACKGROUND, FACE, OBJECT, SUBJECT, Entry
from model.evaluate.regions import RegionFinder, Regions, region_crop
from model.evaluate.video import VideoFrames


INPAINT_BACKENDS = ("opencv", "model")
# Stage 4's defaults for the inpainter (prompt of an empty scene, steps, guidance, strength, work size).
BACKGROUND_CONFIG = BackgroundConfig()


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


def background_similarity(dino, background: np.ndarray, frames: list[np.ndarray], regions: list[dict],
                          inpainter=None) -> float:
    """Eq. 24-25: subjects inpainted out of each frame (``inpainter``: the role's pipeline, or
    ``None`` for Telea), DINO cosine with the background reference."""
    cleaned = []
    for frame, found in zip(frames, regions):
        hole = np.zeros(frame.shape[:2], bool)
        for mask in found.values():
            hole |= mask
        cleaned.append(remove_subjects(frame, hole.astype(np.uint8) * 255, BACKGROUND_CONFIG, inpainter)
                       if hole.any() else frame)
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

    def __init__(self, models=None, device=None, regions: Regions | None = None, dino=None,
                 inpaint: str = "opencv"):
        if inpaint not in INPAINT_BACKENDS:
            raise ValueError(f"evaluate.bg_inpaint: {inpaint!r}; choose one of {', '.join(INPAINT_BACKENDS)}")
        super().__init__(models, device, regions, dino)
        self.inpainter = None
        if inpaint == "model":
            self.roles = (*self.roles, "inpainter")
            try:
                self.sources["inpainter"] = resolve("inpainter", models)
            except ModelSourceError as exc:
                raise MetricUnavailable(f"metric {self.name} skipped: {exc}; supply it with --models "
                                        "inpainter=HUB_ID_OR_DIR, or use evaluate.bg_inpaint=opencv") from exc
            self.inpainter = self.load("inpainter")

    def score(self, entry: Entry, video: VideoFrames) -> dict[str, float]:
        backgrounds = entry.of_kind(BACKGROUND)
        if not backgrounds:
            raise NotScored("no_background_reference")
        frames = list(video.sampled)
        labels = [r.label for r in subject_references(entry)]
        found = self.regions(frames, labels) if labels else [{} for _ in frames]
        return {"bg_sim": background_similarity(self.dino, backgrounds[0].image, frames, found, self.inpainter)}


OPENS2V_NEXUS_FRAMES = 32  # frames get_nexusscore.py samples; its score divides by their count with a detection


def nexus_score(crop_similarities: list[float], frames_with_detection: int, sampled: int) -> float:
    """OpenS2V's form: mean crop cosine / frames with a detection, that count rescaled to 32 frames."""
    kept = [s for s in crop_similarities if s != 0]  # their loop drops a zero score
    if not kept or not frames_with_detection:
        return 0.0
    return float(np.mean(kept)) / (frames_with_detection * OPENS2V_NEXUS_FRAMES / sampled)


class NexusScore(_DinoMetric):
    name = "nexus_score"
    outputs = ("nexus_score", "nexus_similarity")

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
        similarities: list[float] = []
        detected = np.zeros(len(frames), bool)
        for ref in refs:
            crops = []
            for i, (frame, found) in enumerate(zip(frames, boxes)):
                for x0, y0, x1, y1 in np.atleast_2d(found.get(ref.label, np.zeros((0, 4)))).astype(int):
                    if x1 > x0 and y1 > y0:
                        crops.append(frame[max(y0, 0):y1, max(x0, 0):x1])
                        detected[i] = True
            if crops:
                similarities += cosine(self.dino.embed(crops), self.dino.embed([ref.image]))[:, 0].tolist()
        return {"nexus_score": nexus_score(similarities, int(detected.sum()), len(frames)),
                "nexus_similarity": float(np.mean(similarities)) if similarities else 0.0}


def _mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return np.zeros((0, 4), np.float32)
    return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)

"""The paper's object filters (MAGREF Appendix B.2, Eq. 14-16), plus shape and duplicates.

Each candidate object ends with one status, the first rule it fails, in this order:

* ``too_small`` (Eq. 14): the refined mask covers less than ``theta_min`` of the frame;
  upscaled, such a reference is mostly blur.
* ``irregular``: the refined mask's solidity (area / convex-hull area) is below
  ``min_solidity``, or SAM2's raw mask was in more than ``max_components`` sizeable
  pieces (a fragmented mask is rarely one clean object).
* ``overlaps_face`` (Eq. 15-16): mask IoU with any face mask of the same frame above
  ``face_iou_max`` (0.25, the paper's): such an "object" is a face or a head, and faces
  are stage 3's references. People themselves ("man", "woman") overlap their face far
  less than that, and stay.
* ``duplicate``: two masks of one label on one frame with IoU above ``duplicate_iou``
  are one thing found twice; the higher detection score keeps it. Only candidates that
  passed the rules above compete, so a kept object is never a duplicate of a dropped one.

Every candidate keeps its numbers (area, solidity, face IoU) whatever its status, so a
threshold can be re-chosen from the table without re-running SAM2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.images import mask_box
from curation.objects.morphology import significant_components, solidity
from curation.operator import setting
from schemas.tables import KEPT

TOO_SMALL, IRREGULAR, OVERLAPS_FACE, DUPLICATE = "too_small", "irregular", "overlaps_face", "duplicate"


@dataclass
class FilterConfig:
    theta_min: float = setting(0.01, help="Eq. 14: smallest refined mask, as a fraction of the frame's area")
    min_solidity: float = setting(0.5, help="area / convex-hull area below this: irregular")
    max_components: int = setting(3, help="raw SAM2 mask in more sizeable pieces than this: irregular")
    component_fraction: float = setting(0.1, help="a piece counts when >= this fraction of the largest piece")
    face_iou_max: float = setting(0.25, help="Eq. 16")
    duplicate_iou: float = setting(0.8, help="same label, same frame, mask IoU above this: one object")

    def __post_init__(self) -> None:
        for name in ("theta_min", "min_solidity", "component_fraction", "face_iou_max", "duplicate_iou"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"objects.filters.{name} must be within [0, 1], got {getattr(self, name)}")
        if self.max_components < 1:
            raise ValueError(f"max_components must be >= 1, got {self.max_components}")


@dataclass
class Candidate:
    """One SAM2 mask of one detection, before and after refinement."""

    label: str
    score: float
    frame: int  # which keyframe (position in the clip's frames)
    raw: np.ndarray  # SAM2's mask (bool, frame size)
    refined: np.ndarray  # after curation.objects.morphology.refine


@dataclass
class Verdict:
    status: str
    area: int
    solidity: float
    face_iou: float
    components: int = 0  # sizeable pieces of the raw SAM2 mask


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Eq. 15: |A ∩ B| / |A ∪ B| of two same-size masks, computed on their boxes' union only."""
    box_a, box_b = mask_box(a), mask_box(b)
    if box_a is None or box_b is None:
        return 0.0
    ax, ay, aw, ah = (int(v) for v in box_a)
    bx, by, bw, bh = (int(v) for v in box_b)
    if ax >= bx + bw or bx >= ax + aw or ay >= by + bh or by >= ay + ah:
        return 0.0
    x0, y0 = min(ax, bx), min(ay, by)
    x1, y1 = max(ax + aw, bx + bw), max(ay + ah, by + bh)
    a, b = np.asarray(a[y0:y1, x0:x1]) > 0, np.asarray(b[y0:y1, x0:x1]) > 0
    union = int(np.count_nonzero(a | b))
    return int(np.count_nonzero(a & b)) / union if union else 0.0


def judge(candidates: list[Candidate], faces: dict[int, list[np.ndarray]], frame_area: int,
          config: FilterConfig | None = None) -> list[Verdict]:
    """One verdict per candidate (same order). ``faces`` maps a keyframe to its face masks."""
    config = config or FilterConfig()
    verdicts = []
    for item in candidates:
        area = int(np.count_nonzero(item.refined))
        shape = solidity(item.refined)
        pieces = significant_components(item.raw, config.component_fraction)
        face_iou = max((mask_iou(item.refined, face) for face in faces.get(item.frame, [])), default=0.0)
        if area < config.theta_min * frame_area:
            status = TOO_SMALL
        elif shape < config.min_solidity or pieces > config.max_components:
            status = IRREGULAR
        elif face_iou > config.face_iou_max:
            status = OVERLAPS_FACE
        else:
            status = KEPT
        verdicts.append(Verdict(status, area, float(shape), float(face_iou), pieces))
    _mark_duplicates(candidates, verdicts, config.duplicate_iou)
    return verdicts


def _mark_duplicates(candidates: list[Candidate], verdicts: list[Verdict], threshold: float) -> None:
    """Within each (label, frame), the best-scoring survivor keeps a mask; overlapping ones are duplicates."""
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i].score)
    kept: dict[tuple[str, int], list[int]] = {}
    for i in order:
        if verdicts[i].status != KEPT:
            continue
        group = kept.setdefault((candidates[i].label, candidates[i].frame), [])
        if any(mask_iou(candidates[i].refined, candidates[j].refined) > threshold for j in group):
            verdicts[i].status = DUPLICATE
        else:
            group.append(i)

"""Where each subject is on a frame: GroundingDINO boxes for its label, SAM2 masks in them.

Subj-Sim, Bg-Sim and NexusScore ask ``RegionFinder(frames, labels)`` for one mask per label
per frame (the union of that label's kept boxes' masks; a label not found has no entry).
It reuses stage 2's operators' functions (``curation/objects``): the same query format,
thresholds and mask decoding, so evaluation finds subjects as curation did. Any callable
with the same signature can stand in (tests supply known regions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from curation.models import load
from curation.objects.grounding import GroundingConfig, detect, query_of
from curation.objects.segment import SegmentConfig, segment_boxes

Regions = Callable[[list[np.ndarray], list[str]], list[dict[str, np.ndarray]]]


class RegionFinder:
    roles = ("grounding", "segmenter")

    def __init__(self, models=None, device: str | None = None, grounding: GroundingConfig | None = None,
                 segment: SegmentConfig | None = None):
        self.grounding = load("grounding", models, device=device)
        self.segmenter = load("segmenter", models, device=device)
        self.grounding_config = grounding or GroundingConfig()
        self.segment_config = segment or SegmentConfig()
        self._last: tuple[str, list[dict[str, np.ndarray]]] | None = None

    def boxes(self, images: list[np.ndarray], labels: list[str]) -> list[dict[str, np.ndarray]]:
        """Per image, ``{label: (n, 4) boxes}`` above GroundingDINO's thresholds."""
        text, names, spans = query_of(labels, labels[0] if labels else "object")
        found = detect(self.grounding, images, [(names, spans, text)] * len(images), self.grounding_config)
        out = []
        for dets in found:
            per_label: dict[str, list] = {}
            for det in dets:
                if det.label in labels:
                    per_label.setdefault(det.label, []).append(det.box)
            out.append({k: np.asarray(v, np.float32) for k, v in per_label.items()})
        return out

    def __call__(self, images: list[np.ndarray], labels: list[str]) -> list[dict[str, np.ndarray]]:
        labels = [label for label in dict.fromkeys(labels) if label]
        if not labels or not images:
            return [{} for _ in images]
        key = _key(images, labels)
        if self._last is not None and self._last[0] == key:  # Subj-Sim then Bg-Sim on one video
            return self._last[1]
        per_image = self.boxes(images, labels)
        flat = [np.concatenate([b for b in boxes.values()]) if boxes else np.zeros((0, 4), np.float32)
                for boxes in per_image]
        masks = segment_boxes(self.segmenter, images, flat, self.segment_config)
        out = []
        for boxes, image_masks in zip(per_image, masks):
            regions, first = {}, 0
            for label, label_boxes in boxes.items():
                regions[label] = image_masks[first:first + len(label_boxes)].any(axis=0)
                first += len(label_boxes)
            out.append(regions)
        self._last = (key, out)
        return out


def _key(images: list[np.ndarray], labels: list[str]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for image in images:
        digest.update(np.ascontiguousarray(image).data)
    digest.update("\n".join(labels).encode())
    return digest.hexdigest()


def region_crop(image: np.ndarray, mask: np.ndarray, fill: int = 255) -> np.ndarray | None:
    """The mask's bounding box of ``image`` with everything outside the mask set to ``fill``
    (white: how stage 2's reference cut-outs look once composited for the canvas)."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = image[y0:y1, x0:x1, :3].copy()
    crop[~mask[y0:y1, x0:x1]] = fill
    return crop

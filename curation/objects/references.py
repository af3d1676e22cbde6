"""From a clip's masks to its ``objects`` rows: refine (Eq. 13), filter (Eq. 14-16), cut out.

This is the CPU end of stage 2. It sees one clip whole (its keyframes, every
detection and every SAM2 mask), because the face and duplicate filters compare masks
of one clip with each other. Each non-face detection becomes one row, kept or with
the filter that dropped it, carrying its numbers either way; the face detections only
serve the face filter.

Coordinates: ``box`` is GroundingDINO's box (Eq. 11) as ``(x, y, w, h)`` in the source
video's pixels. ``mask`` (1-bit grey PNG) covers the whole keyframe at the size it
was decoded (the source size unless larger than ``frames.max_side``); ``ref`` is the
RGBA tight crop of that keyframe with the refined mask as alpha; ``area`` counts the
refined mask's pixels at that size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curation.envelope import apply_to_live, per_input, to_table
from curation.frames import FRAMES, decode_frames
from curation.images import encode_mask, encode_png, rgba_cutout
from curation.objects.filters import Candidate, FilterConfig, judge
from curation.objects.grounding import DETECTIONS, Detection, detections_from_row
from curation.objects.labels import LABELS
from curation.objects.morphology import MorphologyConfig, refine
from curation.objects.segment import MASKS, unpack_mask
from curation.operator import TaskPool, setting
from schemas.ids import object_id
from schemas.tables import INPUT, KEPT, OBJECTS

PRIVATE = (FRAMES, DETECTIONS, MASKS, LABELS)  # columns the steps before pass along, dropped here


@dataclass
class ReferencesConfig:
    keep_filtered_images: bool = setting(True, help="False: filtered rows keep their numbers but no mask/ref PNGs")
    pool: TaskPool = setting(factory=lambda: TaskPool(batch_size=4, num_cpus=1.0), help=
        "batch_size = clips per task (each clip whole: keyframes, detections, masks)")


class ObjectReferences:
    """Stage 2, step 4 (CPU): a clip's masks -> its ``objects`` rows (refine, filter, cut out).

    Sees each clip whole (``whole_inputs``): the face and duplicate filters compare the
    masks of one clip. A clip with no object is one empty row: processed, nothing found.
    """

    whole_inputs = True

    def __init__(self, config: ReferencesConfig, morphology: MorphologyConfig, filters: FilterConfig):
        self.config, self.morphology, self.filters = config, morphology, filters

    def __call__(self, batch: pa.Table) -> pa.Table:
        result = apply_to_live(batch, lambda live: to_table(per_input(live.to_pylist(), INPUT, self._clip), OBJECTS))
        # Settled rows (earlier errors) still carry the steps' private columns: end them here.
        return result.drop_columns([c for c in PRIVATE if c in result.column_names])

    def _clip(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        detections = detections_from_row(row.get(DETECTIONS))
        if not detections:
            return []
        frames = decode_frames(row[FRAMES])
        height, width = frames.images.shape[1:3]
        masks = [unpack_mask(data, height, width) for data in row[MASKS]]
        return object_rows(row, frames.images, frames.indices, detections, masks, self.morphology, self.filters,
                           self.config)


def object_rows(clip: dict[str, Any], images: np.ndarray, frame_numbers: np.ndarray,
                detections: list[Detection], masks: list[np.ndarray], morphology: MorphologyConfig,
                filters: FilterConfig, config: ReferencesConfig | None = None) -> list[dict[str, Any]]:
    """The ``objects`` rows of one clip (possibly none).

    ``images``/``frame_numbers``: the clip's keyframes and their frame numbers in the
    video; ``detections[i]`` (its ``frame`` indexes ``images``) has the SAM2 mask ``masks[i]``.
    """
    config = config or ReferencesConfig()
    if len(detections) != len(masks):
        raise ValueError(f"clip {clip['clip_id']}: {len(detections)} detections but {len(masks)} masks")
    height, width = images.shape[1:3]
    sx = float(clip.get("width") or width) / width
    sy = float(clip.get("height") or height) / height
    faces: dict[int, list[np.ndarray]] = {}
    objects: list[tuple[Detection, Candidate]] = []
    for detection, mask in zip(detections, masks):
        refined = refine(mask, morphology)
        if detection.face:
            faces.setdefault(detection.frame, []).append(refined)
        else:
            objects.append((detection, Candidate(detection.label, detection.score, detection.frame, mask, refined)))
    verdicts = judge([c for _, c in objects], faces, height * width, filters)
    rows = []
    for index, ((detection, candidate), verdict) in enumerate(zip(objects, verdicts)):
        x0, y0, x1, y1 = detection.box
        images_too = verdict.status == KEPT or config.keep_filtered_images
        mask_png = ref_png = None
        if images_too and verdict.area:
            ref, _ = rgba_cutout(images[candidate.frame], candidate.refined)
            mask_png, ref_png = encode_mask(candidate.refined), encode_png(ref)
        rows.append({
            "object_id": object_id(clip["clip_id"], index),
            "clip_id": clip["clip_id"],
            "label": candidate.label,
            "frame": int(frame_numbers[candidate.frame]),
            "box": [x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy],
            "score": float(candidate.score),
            "mask": mask_png,
            "ref": ref_png,
            "area": verdict.area,
            "solidity": verdict.solidity,
            "face_iou": verdict.face_iou,
            "status": verdict.status,
        })
    return rows

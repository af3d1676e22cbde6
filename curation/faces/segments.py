"""Stage 3, operator 1: ``FaceFrames`` (CPU tasks) decodes one frame every ``faces.every_s``
seconds of the clip and of the ``faces.margin_s`` seconds before and after it (the paper's
"adjacent segments"), in one ``FRAMES`` blob with a named set per segment.

A clip whose own frames fail to decode settles as one error row; the others go on. A
neighbouring segment that fails to decode is logged and not searched: the clip's own frames
are fine, and its references should not depend on the next shot's bytes. The neighbouring
segments are cut at the video's ends: ``before`` starts at 0 s and ``after`` ends at the
video's duration (the job joins ``duration_s`` from the videos table; without it there is
no ``after`` segment, since asking a decoder for frames past the end is an error).
A clip with a ``crop`` (imported datasets cut a watermark band off) is searched inside it
only: its frames are cut to the crop here, and ``FaceDetector`` maps boxes back to source px.
A clip with ``FACE_REGIONS`` (``faces.regions=person_boxes``: boxes of its person objects, each
on its own frame) is searched on those frames only, with every pixel outside the boxes blanked,
so the detector sees the whole crop (its edge filters stay the frame's) but only the people in it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from curation.decode import IncompleteVideoError
from curation.envelope import apply_to_live, put_column, settle_failures
from curation.faces import FacesConfig
from curation.faces.measure import AFTER, BEFORE, CLIP
from curation.frames import (
    FRAMES,
    TIME_EPS,
    ClipFrames,
    FrameRequest,
    at_frames,
    encode_frames,
    every,
    read_clip_frames,
    read_range_frames,
)
from schemas.tables import FACES, INPUT

DURATION = "duration_s"  # the video's duration, joined from the videos table by the job
CLIP_CROP = "clip_crop"  # the clip's ``crop``, renamed by the job: a faces row's ``crop`` is its PNG
FACE_REGIONS = "face_regions"  # [[frame, x, y, w, h], ...] in source px: the only places searched (null: everywhere)
NEIGHBOUR_MIN_S = 1e-3  # a neighbouring range shorter than this holds no frame worth reading
log = logging.getLogger(__name__)


def frame_request(config: FacesConfig) -> FrameRequest:
    """One frame every ``every_s`` seconds, short side at most ``short_side`` pixels."""
    return every(config.every_s, short_side=config.short_side)


def segment_ranges(start_s: float, end_s: float, duration_s: float | None, margin_s: float
                   ) -> dict[str, tuple[float, float]]:
    """The neighbouring time ranges searched besides the clip, cut at the video's ends."""
    ranges: dict[str, tuple[float, float]] = {}
    if margin_s <= 0:
        return ranges
    before = (max(0.0, start_s - margin_s), start_s)
    if before[1] - before[0] > NEIGHBOUR_MIN_S:
        ranges[BEFORE] = before
    if duration_s is not None:
        after = (end_s, min(float(duration_s), end_s + margin_s))
        if after[1] - after[0] > NEIGHBOUR_MIN_S + TIME_EPS:
            ranges[AFTER] = after
    return ranges


def read_segments(row: dict[str, Any], config: FacesConfig, strict: bool = True) -> dict[str, Any]:
    """{segment: ClipFrames} of one clip row: its own frames and its neighbours' (or only its
    regions' frames, blanked outside the regions, when it has ``FACE_REGIONS``)."""
    if row.get(FACE_REGIONS) is not None:
        return read_regions(row, row[FACE_REGIONS], config, strict)
    request = frame_request(config)
    sets = {CLIP: read_clip_frames(row["uri"], int(row["start_frame"]), int(row["end_frame"]),
                                   float(row["start_s"]), float(row["end_s"]), request, strict)}
    duration = row.get(DURATION)
    ranges = segment_ranges(float(row["start_s"]), float(row["end_s"]), duration, config.margin_s)
    for segment, (start, end) in ranges.items():
        try:
            sets[segment] = read_range_frames(row["uri"], start, end, request, fps=row.get("fps"), strict=strict)
        except IncompleteVideoError as err:  # the clip's own frames decoded: keep the clip, lose this segment
            log.warning("faces: clip %s: the %s segment [%.2f, %.2f) s is not searched: %s",
                        row.get("clip_id"), segment, start, end, err)
    crop = row.get(CLIP_CROP)
    if crop:
        sets = {name: cut_to_crop(frames, crop, (int(row["width"]), int(row["height"]))) for name, frames in sets.items()}
    return sets


def read_regions(row: dict[str, Any], regions: list[list[float]], config: FacesConfig, strict: bool = True
                 ) -> dict[str, ClipFrames]:
    """{CLIP: the regions' frames}, black outside every region box of each frame, cut to the
    clip's crop; no set at all for a clip without regions (nothing to search)."""
    numbers = sorted({int(region[0]) for region in regions})
    if not numbers:
        return {}
    frames = read_clip_frames(row["uri"], 0, numbers[-1] + 1, 0.0, float("inf"),
                              at_frames(numbers, short_side=config.short_side), strict)
    source = (int(row["width"]), int(row["height"]))
    images = np.zeros_like(frames.images)
    for k, number in enumerate(frames.indices):
        for region in regions:
            if int(region[0]) == int(number):
                y0, y1, x0, x1 = _scaled(region[1:], source, frames.images.shape[1:3])
                images[k, y0:y1, x0:x1] = frames.images[k, y0:y1, x0:x1]
    frames = replace(frames, images=images)
    crop = row.get(CLIP_CROP)
    return {CLIP: cut_to_crop(frames, crop, source) if crop else frames}


def in_regions(box: list[float], frame: int, regions: list[list[float]]) -> bool:
    """Whether a face's box (x, y, w, h, source px) is centred in a region of its frame."""
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return any(int(r[0]) == int(frame) and r[1] <= cx < r[1] + r[3] and r[2] <= cy < r[2] + r[4] for r in regions)


def _scaled(box: list[float], source_size: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box (x, y, w, h, source px) as y0, y1, x0, x1 on frames decoded at ``shape`` (height, width)."""
    sx, sy = shape[1] / source_size[0], shape[0] / source_size[1]
    return (int(round(box[1] * sy)), int(round((box[1] + box[3]) * sy)),
            int(round(box[0] * sx)), int(round((box[0] + box[2]) * sx)))


def cut_to_crop(frames: Any, crop: list[float], source_size: tuple[int, int]) -> Any:
    """``frames`` cut to the clip's ``crop`` (x, y, w, h in source px), whatever size they were
    decoded at: a face in the band outside it is not the clip's (OpenS2V's watermark crop)."""
    y0, y1, x0, x1 = _scaled(crop, source_size, frames.images.shape[1:3])
    return replace(frames, images=frames.images[:, y0:y1, x0:x1])


class FaceFrames:
    """CPU step: every live clip row gets its segments' frames in the ``FRAMES`` column."""

    def __init__(self, config: FacesConfig, strict: bool = True):
        self.config, self.strict = config, strict

    def __call__(self, batch: pa.Table) -> pa.Table:
        failed: dict[str, BaseException] = {}
        result = apply_to_live(batch, lambda live: self._read(live, failed))
        return settle_failures(result, failed, FACES)

    def _read(self, live: pa.Table, failed: dict[str, BaseException]) -> pa.Table:
        blobs: list[bytes | None] = []
        for row in live.to_pylist():
            try:
                blobs.append(encode_frames(read_segments(row, self.config, self.strict)))
            except Exception as exc:  # noqa: BLE001 - one clip's failure settles only its input
                failed.setdefault(row[INPUT], exc)
                blobs.append(None)
        return put_column(live, FRAMES, pa.array(blobs, pa.binary()))

"""Stage 3's three operators, in pipeline order (``pipelines/stage3_faces.py`` wires them).

1. ``FaceFrames`` (CPU tasks): decodes one frame every ``faces.every_s`` seconds of the
   clip and of the ``faces.margin_s`` seconds before and after it (the paper's
   "adjacent segments"), in one ``FRAMES`` blob with a named set per segment. A clip
   whose own frames fail to decode settles as one error row; the others go on. A
   neighbouring segment that fails to decode is logged and not searched: the clip's
   own frames are fine, and its references should not depend on the next shot's bytes.
2. ``FaceDetector`` (actors, GPU when present): the backend detects and embeds on every
   frame; ``measure.measure_faces`` adds pose, blur, crop and the filter verdict. One row
   per face (its verdict in the private ``_filter`` column, status still ``kept``: the
   face is not settled until its clip is), or one empty row for a clip with no face.
3. ``FaceReferences`` (CPU tasks, whole clips): identities, final statuses, ranks and the
   selection (``references.clip_references``).

The neighbouring segments are cut at the video's ends: ``before`` starts at 0 s and
``after`` ends at the video's duration (the job joins ``duration_s`` from the videos
table; without it there is no ``after`` segment, since asking a decoder for frames past
the end is an error).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.decode import IncompleteVideoError
from curation.envelope import apply_to_live, empty_row, put_column, run_isolated, settle_failures, to_table
from curation.faces.config import FacesConfig
from curation.faces.detect import insightface_pack
from curation.faces.dlib_backend import weights_dir
from curation.faces.measure import AFTER, BEFORE, CLIP, measure_faces
from curation.faces.references import clip_references
from curation.frames import FRAMES, TIME_EPS, FrameRequest, decode_frame_sets, encode_frames, every, \
    read_clip_frames, read_range_frames
from curation.models import TINY, load, resolve
from schemas.tables import FACES, INPUT, KEPT

FILTER = "_filter"  # the detection step's verdict, settled by FaceReferences
DURATION = "duration_s"  # the video's duration, joined from the videos table by the job
NEIGHBOUR_MIN_S = 1e-3  # a neighbouring range shorter than this holds no frame worth reading
ROLES = {"insightface": "face_analysis", "dlib": "face_dlib"}
log = logging.getLogger(__name__)


def check_weights(config: FacesConfig, models: Any) -> str | None:
    """Before Ray starts: raise ``FileNotFoundError`` for weights that cannot appear later (dlib's
    come only from a package or a folder), or return a note for an InsightFace pack that is not
    on this machine (each actor then asks InsightFace to download it)."""
    source = resolve(ROLES[config.backend], models)
    if source == TINY:
        return None
    if config.backend == "dlib":
        try:
            weights_dir(source)
        except RuntimeError as err:
            raise FileNotFoundError(str(err)) from None
        return None
    if importlib.util.find_spec("insightface") is None:
        raise FileNotFoundError("faces.backend=insightface needs the insightface package: pip install --no-deps "
                                "insightface (README, Known traps), or use --set faces.backend=dlib")
    name, folder = insightface_pack(source)
    if os.path.isdir(folder):
        return None
    return f"InsightFace pack {name!r} is not in {folder}: each actor will try to download it"


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
    """{segment: ClipFrames} of one clip row: its own frames and its neighbours'."""
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
    return sets


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


class FaceDetector:
    """Actor step: detection, keypoints, embedding, pose, blur, crop and filter verdict for each face."""

    def __init__(self, config: FacesConfig, models: Any = None, device: str | None = None):
        self.config = config
        self.backend = load(ROLES[config.backend], models, device=device).configure(config.backend_config)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return run_isolated(batch, self._detect, FACES)

    def _detect(self, live: pa.Table) -> pa.Table:
        rows: list[dict[str, Any]] = []
        for clip in live.to_pylist():
            sets = decode_frame_sets(clip[FRAMES])
            frame = sets[CLIP].images
            source = (clip.get("width") or frame.shape[2], clip.get("height") or frame.shape[1])
            faces = measure_faces(self.backend, sets, (int(source[0]), int(source[1])), self.config)
            if not faces:
                rows.append(empty_row(clip[INPUT]))
            for face in faces:
                face[FILTER], face["status"] = face.pop("status"), KEPT
                rows.append({**face, INPUT: clip[INPUT], "clip_id": clip["clip_id"]})
        return to_table(rows, FACES)


class FaceReferences:
    """CPU step over whole clips: identities, statuses, ranks and the selected references."""

    whole_inputs = True

    def __init__(self, config: FacesConfig):
        self.config = config

    def __call__(self, batch: pa.Table) -> pa.Table:
        return run_isolated(batch, self._choose, FACES)

    def _choose(self, live: pa.Table) -> pa.Table:
        rows: list[dict[str, Any]] = []
        for input_id in pc.unique(live.column(INPUT)).to_pylist():
            faces = live.filter(pc.equal(live.column(INPUT), input_id)).to_pylist()
            for face in faces:
                face["status"] = face.pop(FILTER)
            for face in clip_references(faces[0]["clip_id"], faces, self.config):
                face[INPUT] = input_id
                rows.append(face)
        return to_table(rows, FACES)

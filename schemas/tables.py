"""One pyarrow schema per table (DESIGN.md "Tables"), versioned in schema metadata.

Images are PNG bytes inline; videos are referenced by uri and frame range. Every
schema carries ``magref.table`` and ``magref.schema_version`` in its metadata so a
reader can tell which table a Parquet file holds and whether it is out of date.

Operators emit rows with the *envelope* columns (``ERROR_COLUMNS``) alongside their
output columns; the writer (``pipelines/ledger.py``, ``commit``) moves rows with an error into
the ``errors`` table and writes the rest with the table's schema. That way an
operator reports a bad input without knowing where tables live.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"  # the starting version of every table; each table bumps its own

# Envelope columns. Every row an operator emits carries the id of the input it came
# from (``INPUT``); a failed input's row carries the error columns (null otherwise).
# A row whose status is ``EMPTY`` says "this input was processed and yielded nothing":
# it goes to the stage ledger only, never into a table.
INPUT = "_input"
ERROR_TYPE = "_error_type"
ERROR_MESSAGE = "_error_message"
ERROR_TRACEBACK = "_error_traceback"
ERROR_COLUMNS = (ERROR_TYPE, ERROR_MESSAGE, ERROR_TRACEBACK)

ENVELOPE_COLUMNS = (INPUT, *ERROR_COLUMNS)

KEPT = "kept"  # status of a row that passed every filter; any other status names the filter
EMPTY = "_empty"
ERROR = "_error"  # status the envelope gives an error row, so later operators skip it

_box = pa.list_(pa.float32(), 4)  # x, y, w, h in pixels of the source frame (Eq. 11)


def _schema(table: str, fields: list[pa.Field], key: str, version: str = SCHEMA_VERSION) -> pa.Schema:
    """A table's schema; ``version`` is that table's own, bumped when its columns change."""
    return pa.schema(fields, metadata={
        "magref.table": table,
        "magref.schema_version": version,
        "magref.key": key,
    })


VIDEOS = _schema("videos", [
    pa.field("uri", pa.string(), nullable=False),
    pa.field("video_id", pa.string(), nullable=False),  # content hash; equal files share it
    pa.field("bytes", pa.int64()),
    pa.field("duration_s", pa.float64()),
    pa.field("fps", pa.float64()),
    pa.field("num_frames", pa.int64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("codec", pa.string()),
    pa.field("pix_fmt", pa.string()),
    pa.field("has_audio", pa.bool_()),
], key="uri")

# Version 2: ``crop``, the part of the frame that is the clip (imported datasets cut
# watermarks off this way); readers of the clip's frames apply it.
CLIPS = _schema("clips", [
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("uri", pa.string(), nullable=False),
    pa.field("start_frame", pa.int64(), nullable=False),
    pa.field("end_frame", pa.int64(), nullable=False),  # exclusive
    pa.field("start_s", pa.float64(), nullable=False),
    pa.field("end_s", pa.float64(), nullable=False),
    pa.field("fps", pa.float64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("motion", pa.float32()),
    pa.field("aesthetic", pa.float32()),
    pa.field("status", pa.string(), nullable=False),  # "kept" or the filter that dropped it
    pa.field("caption", pa.string()),
    pa.field("subjects", pa.list_(pa.string())),
    pa.field("crop", _box),  # x, y, w, h in source px; null: the whole frame
], key="clip_id", version="2")

OBJECTS = _schema("objects", [
    pa.field("object_id", pa.string(), nullable=False),
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("label", pa.string(), nullable=False),
    pa.field("frame", pa.int64()),
    pa.field("box", _box),
    pa.field("score", pa.float32()),
    pa.field("mask", pa.binary()),  # PNG, 1 channel
    pa.field("ref", pa.binary()),  # PNG, RGBA: the object cut out on transparency (Eq. 12)
    pa.field("area", pa.int64()),
    pa.field("solidity", pa.float32()),
    pa.field("face_iou", pa.float32()),
    pa.field("status", pa.string(), nullable=False),
], key="object_id")

# Version 2: where each face was seen (segment, time), its keypoints, the ranking
# score, the crop's box, and embeddings of any size named by the model that made them
# (InsightFace's 512-d ArcFace and dlib's 128-d vectors are different spaces).
FACE_SEGMENTS = ("before", "clip", "after")  # the clip itself or the neighbouring seconds searched
FACES = _schema("faces", [
    pa.field("face_id", pa.string(), nullable=False),
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("identity_id", pa.string()),  # per clip; null: the face joined no identity of the clip
    pa.field("segment", pa.string(), nullable=False),  # one of FACE_SEGMENTS
    pa.field("frame", pa.int64()),  # frame number in the source video
    pa.field("time_s", pa.float64()),  # its presentation time
    pa.field("box", _box),
    pa.field("keypoints", pa.list_(pa.float32(), 10)),  # eye centres, nose tip, mouth corners as x, y (source px)
    pa.field("det_score", pa.float32()),  # the detector's own score (backend-specific scale)
    pa.field("yaw", pa.float32()),  # degrees, > 0: face turned toward the image's left
    pa.field("pitch", pa.float32()),  # degrees, > 0: face tilted down
    pa.field("roll", pa.float32()),  # degrees, > 0: clockwise in the image
    pa.field("blur", pa.float32()),  # variance of the Laplacian of the aligned 112x112 crop
    pa.field("score", pa.float32()),  # ranking score: detection confidence x frontalness
    pa.field("embedding", pa.list_(pa.float32())),
    pa.field("embedding_model", pa.string(), nullable=False),  # e.g. insightface:buffalo_l/w600k_r50.onnx
    pa.field("crop", pa.binary()),  # PNG of crop_box (the box grown by faces.crop_margin)
    pa.field("crop_box", _box),
    pa.field("rank", pa.int32()),  # 0 = best-scored usable face of its identity
    pa.field("selected", pa.bool_()),  # one of the identity's references (I^Face, Eq. 17)
    pa.field("status", pa.string(), nullable=False),  # kept, or low_quality/occluded/pose/blur/not_in_clip
], key="face_id", version="2")

# Stage 4, per clip: one row per reference that got a generated variant I' (kind
# "face" / "object", ``source_id`` = its face_id / object_id) and one row for the clip's
# background I^Bg (kind "background", ``source_id`` = the clip_id). ``image`` is the
# variant or the background; ``prompt``, ``seed`` and ``model`` say how it was made.
PAIRS = _schema("pairs", [
    pa.field("pair_id", pa.string(), nullable=False),
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),  # "face" | "object" | "background"
    pa.field("source_id", pa.string(), nullable=False),
    pa.field("image", pa.binary()),  # PNG: the variant I' or the background I^Bg (null when filtered)
    pa.field("variant_source", pa.string()),  # "generated" (cross-clip variants live in cross_pairs)
    pa.field("model", pa.string()),  # the editor / inpainter source, or "opencv"
    pa.field("prompt", pa.string()),
    pa.field("seed", pa.int64()),
    pa.field("frame", pa.int64()),  # background: the keyframe
    pa.field("mask", pa.binary()),  # background: PNG of the removed subjects (union, dilated)
    pa.field("params", pa.string()),  # JSON: size, steps, guidance, augmentation
    pa.field("status", pa.string(), nullable=False),  # "kept" or the reason (e.g. "too_masked")
], key="pair_id")

# Stage 4, global: two identities of different clips whose centroid cosine lies in the
# band "same person, not the same footage" (``curation/pairs/cross_clip.py``). Each pair
# is a natural variant of the other without generation. ``pair_id`` = "A~B", A < B.
CROSS_PAIRS = _schema("cross_pairs", [
    pa.field("pair_id", pa.string(), nullable=False),
    pa.field("identity_a", pa.string(), nullable=False),
    pa.field("clip_a", pa.string(), nullable=False),
    pa.field("identity_b", pa.string(), nullable=False),
    pa.field("clip_b", pa.string(), nullable=False),
    pa.field("similarity", pa.float32(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
], key="pair_id")

_reference_pair = [
    pa.field("ref", pa.binary()),  # PNG, the reference as cut from the clip
    pa.field("variant", pa.binary()),  # PNG, the variant I' (Eq. 19; may be null)
    pa.field("source_id", pa.string()),  # face_id / object_id it came from
    pa.field("variant_source", pa.string()),  # "generated" | "cross_clip" | null
    pa.field("variant_id", pa.string()),  # pairs.pair_id, or the partner clip's face_id
    pa.field("score", pa.float32()),  # what the reference was chosen by (detection score)
]

# The identity's other selected faces (stage 3 selects up to 10, spread over poses, B.3),
# best rank first after the face in ``ref``: training draws one per epoch. ``variant`` is
# that face's own generated variant where stage 4 made one (``variants.scope=all``), else
# null and the identity's ``variant`` stands in.
MAX_FACE_CROPS = 10  # per identity, ``ref`` included
_face_crop = pa.struct([
    pa.field("face_id", pa.string()),
    pa.field("rank", pa.int32()),
    pa.field("ref", pa.binary()),  # PNG
    pa.field("variant", pa.binary()),  # PNG or null
    pa.field("variant_id", pa.string()),  # pairs.pair_id or null
])

# Version 2: start_s/end_s (frame readers seek by time), per-reference variant_source,
# variant_id and score, and background_id. Version 3: the clip's ``crop`` and faces' ranked ``crops``.
SAMPLES = _schema("samples", [
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("uri", pa.string(), nullable=False),
    pa.field("start_frame", pa.int64(), nullable=False),
    pa.field("end_frame", pa.int64(), nullable=False),
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("fps", pa.float64()),
    pa.field("caption", pa.string(), nullable=False),
    pa.field("subject_words", pa.list_(pa.string())),
    # ``label``: the caption's word for this subject (drives subject disentanglement, Eq. 6).
    pa.field("faces", pa.list_(pa.struct([pa.field("identity_id", pa.string()), pa.field("label", pa.string()),
                                          *_reference_pair, pa.field("crops", pa.list_(_face_crop))]))),
    pa.field("objects", pa.list_(pa.struct([pa.field("label", pa.string()), *_reference_pair]))),
    pa.field("background", pa.binary()),  # PNG, I^Bg (Eq. 19)
    pa.field("background_id", pa.string()),  # pairs.pair_id of the background
    pa.field("provenance", pa.string()),  # JSON: ids of every source row, models, seeds, dropped references
    pa.field("crop", _box),  # the clip's crop (x, y, w, h in source px; null: whole frame), applied by training
], key="sample_id", version="3")

# One row per cached training example (pipelines/cache_latents.py): where its tensors are.
LATENTS = _schema("latents", [
    pa.field("entry_id", pa.string(), nullable=False),  # sample_id + "." + augmentation
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("augmentation", pa.int32(), nullable=False),  # the example's augmentation seed
    pa.field("path", pa.string(), nullable=False),  # safetensors file, relative to the cache root
    pa.field("width", pa.int32()),  # the clip's bucket in pixels
    pa.field("height", pa.int32()),
    pa.field("frames", pa.int32()),
    pa.field("bytes", pa.int64()),
], key="entry_id")

# One row per evaluated video and metric output (model/evaluate, pipelines/evaluate_videos.py).
# ``status`` is "kept" when ``value`` holds a score, else why it does not (no_video,
# no_face_in_video, bad_reference, ...); ``model`` names the role=source pairs that scored it.
SCORES = _schema("scores", [
    pa.field("score_id", pa.string(), nullable=False),  # entry_id + "/" + metric
    pa.field("entry_id", pa.string(), nullable=False),
    pa.field("metric", pa.string(), nullable=False),
    pa.field("value", pa.float64()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("detail", pa.string()),  # the reason in words when not scored
    pa.field("model", pa.string()),
    pa.field("seconds", pa.float64()),  # what the metric (family) took on this video, decode excluded
    pa.field("video", pa.string()),
], key="score_id")

# One row per key of an imported dataset (pipelines/import_opens2v.py): the clip it became.
# The key is the dataset's own id, so pair lists that name keys find our clips.
IMPORTS = _schema("imports", [
    pa.field("key", pa.string(), nullable=False),
    pa.field("dataset", pa.string(), nullable=False),  # e.g. "opens2v"
    pa.field("source", pa.string()),  # the file the key was read from
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("uri", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),  # the clip's status
], key="key")

ERRORS = _schema("errors", [
    pa.field("stage", pa.string(), nullable=False),
    pa.field("input", pa.string(), nullable=False),  # the input's id (stage 0: its uri)
    pa.field("error_type", pa.string(), nullable=False),
    pa.field("message", pa.string(), nullable=False),
    pa.field("traceback", pa.string()),  # the last frames only
    pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
], key="input")

# One row per input a stage finished: the commit record that resume and accounting
# read. Written after the input's output and error parts are in place.
LEDGER = _schema("ledger", [
    pa.field("stage", pa.string(), nullable=False),
    pa.field("input", pa.string(), nullable=False),
    pa.field("rows", pa.int64(), nullable=False),  # rows written to the stage's table
    pa.field("statuses", pa.string(), nullable=False),  # JSON {status: count}
    pa.field("error_type", pa.string()),  # set when the input went to the errors table
    pa.field("part", pa.string(), nullable=False),  # the part name the input's rows went to
    pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
], key="input")

SCHEMAS: dict[str, pa.Schema] = {
    "videos": VIDEOS,
    "clips": CLIPS,
    "objects": OBJECTS,
    "faces": FACES,
    "pairs": PAIRS,
    "cross_pairs": CROSS_PAIRS,
    "samples": SAMPLES,
    "latents": LATENTS,
    "scores": SCORES,
    "imports": IMPORTS,
    "errors": ERRORS,
    "ledger": LEDGER,
}


def schema_for(kind: str) -> pa.Schema:
    """The schema of table ``kind``, with a clear error for an unknown name."""
    try:
        return SCHEMAS[kind]
    except KeyError:
        raise KeyError(f"unknown table {kind!r}; tables: {', '.join(SCHEMAS)}") from None


def key_of(kind: str) -> str:
    """The column that identifies a row of table ``kind`` (resume anti-joins on it)."""
    return schema_for(kind).metadata[b"magref.key"].decode()

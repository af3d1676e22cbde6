"""Stage 3: kept clips -> faces (MAGREF Appendix B.3): identities, pose and quality filters, 10 references each.

    python pipelines/stage3_faces.py --run-dir RUN [--models tiny] [--set faces.backend=dlib]
        [--set faces.margin_s=2] [--set faces.pool.actors=4] [--models face_analysis=antelopev2]

Reads the kept clips of RUN/clips (or --input) and the videos' durations from RUN/videos.
Each clip's frames, and those of the ``faces.margin_s`` seconds around it, are decoded
on CPUs; InsightFace (or dlib) detects and embeds every face on actors (GPUs when the
cluster has them); then, per whole clip on CPUs, faces are grouped into identities,
filtered (pose, blur, low_quality, occluded) and ranked, and up to ``faces.select.
per_identity`` faces per identity spread over its poses are selected. Every face found
is a ``faces`` row with its status; a clip with no face is processed with zero rows; a
clip whose frames fail to decode is one ``errors`` row. A clip with a ``crop`` (an imported
watermark crop) is searched inside it only; boxes stay in the video's pixels. With
``--set faces.regions=person_boxes`` a clip is searched only inside the boxes of its
``objects`` rows labelled a person (``faces.person_labels``), on those rows' frames: imported
datasets (pipelines/import_opens2v.py) annotate people on one frame, and a face elsewhere in
the crop is nobody's in the annotation.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pyarrow as pa

from curation.faces import FacesConfig
from curation.faces.detector import FaceDetector, check_weights
from curation.faces.references import FaceReferences
from curation.faces.segments import CLIP_CROP, DURATION, FACE_REGIONS, FaceFrames
from curation.operator import setting
from pipelines.cli import cli
from pipelines.job import StageJob
from pipelines.stages import STAGE
from pipelines.wiring import map_operator
from schemas.command import LOG


@dataclass
class Stage3Config:
    faces: FacesConfig = setting(factory=FacesConfig, help=
        "decode (CPU tasks) -> detect + embed (actors) -> identities, filters, selection (CPU, whole clips)")


def with_durations(job: StageJob, clips: pa.Table) -> pa.Table:
    """Each clip with its video's duration, which bounds the segment searched after it, and its
    crop (renamed ``CLIP_CROP``), which bounds the frame searched."""
    durations: dict[str, float] = {}
    if job.run.has("videos"):
        videos = job.run.read("videos", ["video_id", "duration_s"])
        durations = dict(zip(videos.column("video_id").to_pylist(), videos.column("duration_s").to_pylist()))
    elif job.config.faces.margin_s > 0:
        LOG.warning(f"[faces] {job.run.root.uri()} has no videos table: no segment after a clip is searched")
    values = [durations.get(v) for v in clips.column("video_id").to_pylist()]
    if "crop" in clips.column_names:  # a faces row's ``crop`` is its PNG: the clip's travels as CLIP_CROP
        clips = clips.rename_columns([CLIP_CROP if name == "crop" else name for name in clips.column_names])
    return clips.append_column(DURATION, pa.array(values, pa.float64()))


def with_person_boxes(job: StageJob, clips: pa.Table) -> pa.Table:
    """Each clip with the [frame, x, y, w, h] boxes of its objects labelled a person: the only
    places searched (an empty list: none). The driver reads four small columns of ``objects``."""
    labels = {label.lower() for label in job.config.faces.person_labels}
    ids = clips.column("clip_id").to_pylist()
    found: dict[str, list[list[float]]] = {}
    if job.run.has("objects"):
        objects = job.run.read("objects", ["clip_id", "label", "frame", "box"], [("clip_id", "in", ids)])
        for row in objects.to_pylist():
            if row["box"] and row["frame"] is not None and str(row["label"]).lower() in labels:
                found.setdefault(row["clip_id"], []).append([float(row["frame"]), *(float(v) for v in row["box"])])
    else:
        LOG.warning(f"[faces] {job.run.root.uri()} has no objects table: with faces.regions=person_boxes "
                    "no clip has a place to search")
    values = [found.get(clip, []) for clip in ids]
    return clips.append_column(FACE_REGIONS, pa.array(values, pa.list_(pa.list_(pa.float64()))))


def main(argv: list[str] | None = None) -> int:
    job = StageJob(STAGE["faces"], Stage3Config, __doc__, argv)
    cfg = job.config.faces
    note = check_weights(cfg, job.models)  # missing dlib weights: one line, exit 2, before Ray starts
    if note:
        LOG.info(f"[faces] {note}")
    with job:
        todo = job.pending(job.read_input())
        if todo.num_rows:
            todo = with_durations(job, todo)
            if cfg.regions == "person_boxes":
                todo = with_person_boxes(job, todo)
            ds = job.dataset(todo, rows_per_block=cfg.decode_pool.batch_size)
            ds = map_operator(ds, FaceFrames, cfg.decode_pool, config=cfg)
            ds = map_operator(ds, FaceDetector, cfg.pool, config=cfg, models=job.models)
            ds = map_operator(ds, FaceReferences, cfg.references_pool, config=cfg)
            job.write(ds)
    return 0 if job.report.accounted else 1


if __name__ == "__main__":
    sys.exit(cli(main))

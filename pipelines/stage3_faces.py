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
watermark crop) is searched inside it only; boxes stay in the video's pixels.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pyarrow as pa

from curation.faces import FacesConfig
from curation.faces.detector import FaceDetector, check_weights
from curation.faces.references import FaceReferences
from curation.faces.segments import CLIP_CROP, DURATION, FaceFrames
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
            ds = job.dataset(todo, rows_per_block=cfg.decode_pool.batch_size)
            ds = map_operator(ds, FaceFrames, cfg.decode_pool, config=cfg)
            ds = map_operator(ds, FaceDetector, cfg.pool, config=cfg, models=job.models)
            ds = map_operator(ds, FaceReferences, cfg.references_pool, config=cfg)
            job.write(ds)
    return 0 if job.report.accounted else 1


if __name__ == "__main__":
    sys.exit(cli(main))

"""Stage 2: kept clips -> object references (MAGREF Appendix B.2, Eq. 11-16).

    python pipelines/stage2_objects.py --run-dir RUN [--models tiny] [--set filters.theta_min=0.02]
        [--set labels.from_caption=true] [--set grounding.pool.actors=4] [--set segment.pool.actors=4]

Reads the kept clips of RUN/clips (or --input). Per clip: labels from its ``subjects``
(optionally a text-only Qwen2.5-VL pass over the caption for clips without any), a few
keyframes decoded on CPU, GroundingDINO boxes for all labels plus "human face" in one
query (Eq. 11), a SAM2 mask per box (Eq. 12), then on CPU: morphology (Eq. 13), the
filters ``too_small`` (Eq. 14), ``irregular``, ``overlaps_face`` (Eq. 15-16) and
``duplicate``, and the RGBA reference. Every candidate object is an ``objects`` row, kept
or with its filter; a clip with no object is processed, not an error; a clip whose frames
do not decode or whose label answer is malformed is one ``errors`` row.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from curation.frames import FrameReader
from curation.objects.filters import FilterConfig
from curation.objects.grounding import Grounder, GroundingConfig, keyframe_request
from curation.objects.labels import Labeler, LabelsConfig
from curation.objects.morphology import MorphologyConfig
from curation.objects.references import ObjectReferences, ReferencesConfig
from curation.objects.segment import SegmentConfig, Segmenter
from curation.operator import setting
from pipelines.cli import cli
from pipelines.job import StageJob
from pipelines.stages import STAGE
from pipelines.wiring import map_operator
from schemas.tables import CLIPS


@dataclass
class Stage2Config:
    labels: LabelsConfig = setting(factory=LabelsConfig, help="step 1: subjects -> labels (+ optional Qwen pass)")
    grounding: GroundingConfig = setting(factory=GroundingConfig, help="step 2: keyframes on CPU, GroundingDINO")
    segment: SegmentConfig = setting(factory=SegmentConfig, help="step 3: SAM2 masks from the boxes")
    references: ReferencesConfig = setting(factory=ReferencesConfig, help="step 4, CPU: refine, filter, cut out")
    morphology: MorphologyConfig = setting(factory=MorphologyConfig, help="Eq. 13, in step 4")
    filters: FilterConfig = setting(factory=FilterConfig, help="Eq. 14-16, in step 4")


def main(argv: list[str] | None = None) -> int:
    job = StageJob(STAGE["objects"], Stage2Config, __doc__, argv)
    cfg = job.config
    with job:
        todo = job.pending(job.read_input())  # kept clips only (the stage's declared input)
        if todo.num_rows:
            ds = job.dataset(todo, rows_per_block=cfg.grounding.pool.batch_size)
            if cfg.labels.from_caption:
                ds = map_operator(ds, Labeler, cfg.labels.pool, config=cfg.labels, models=job.models)
            ds = map_operator(ds, FrameReader, cfg.grounding.decode_pool, request=keyframe_request(cfg.grounding),
                              schema=CLIPS)
            ds = map_operator(ds, Grounder, cfg.grounding.pool, config=cfg.grounding,
                              max_labels=cfg.labels.max_labels, extra_labels=cfg.labels.extra, models=job.models)
            ds = map_operator(ds, Segmenter, cfg.segment.pool, config=cfg.segment, models=job.models)
            ds = map_operator(ds, ObjectReferences, cfg.references.pool, config=cfg.references,
                              morphology=cfg.morphology, filters=cfg.filters)
            job.write(ds)
    return 0 if job.report.accounted else 1


if __name__ == "__main__":
    sys.exit(cli(main))

"""Stage 1: videos -> clips (MAGREF Appendix B.1): scenes, motion and aesthetic filters, captions.

    python pipelines/stage1_clips.py --run-dir RUN [--models tiny] [--set scenes.min_seconds=3]
        [--set caption.enabled=false] [--set caption.pool.actors=8]

Reads RUN/videos (or --input), each ``video_id`` once (the same file at two paths is one
video). Every candidate clip becomes a ``clips`` row: ``kept`` with its scores, caption
and subjects, or filtered with its reason (``transition``, ``blank``, ``too_short``,
``motion``, ``aesthetic``) and its scores; a video that fails to decode is one ``errors``
row and no clips. Shot boundaries: TransNetV2 on GPU actors when the job uses GPUs (--gpus),
the classical CPU ensemble otherwise (``--set scenes.detector=...``). Clips are
filtered *before* captioning (the paper captions first): the VLM is the expensive step,
so it only sees clips that survive the cheap filters.

This is the job to copy for a new stage: declared input -> pending -> CPU steps -> a CPU
frames step in front of each GPU step -> write. A video's clips stay in one block from
the split to the write (``pipelines/ledger.py``), so the writer commits a video whole.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from curation.clips.caption import CaptionConfig, Captioner, frame_request
from curation.clips.quality import ClipScorer, QualityConfig
from curation.clips.scenes import ScenesConfig
from curation.clips.splitter import ClipSplitter
from curation.frames import FrameReader
from curation.models import resolve
from curation.operator import setting
from pipelines.cli import cli
from pipelines.job import StageJob
from pipelines.stages import STAGE
from pipelines.wiring import map_operator
from schemas.tables import CLIPS


@dataclass
class Stage1Config:
    scenes: ScenesConfig = setting(factory=ScenesConfig, help="step 1: decode once, boundaries, clips, motion")
    quality: QualityConfig = setting(factory=QualityConfig, help=
        "step 2, actors: aesthetic score, motion + aesthetic filters")
    caption: CaptionConfig = setting(factory=CaptionConfig, help="step 3: frames on CPU, then Qwen2.5-VL")


def main(argv: list[str] | None = None) -> int:
    job = StageJob(STAGE["clips"], Stage1Config, __doc__, argv)
    cfg = job.config
    if cfg.scenes.detector != "classical":
        resolve("shot_boundaries", job.models)  # a bad source fails here, not in a Ray actor
    with job:
        todo = job.pending(job.read_input())  # keeps the first uri of each video_id
        if todo.num_rows:
            ds = job.dataset(todo, rows_per_block=cfg.scenes.pool.batch_size)
            scenes = cfg.scenes.resolved(job.gpus)  # detector "auto": TransNetV2 when the job uses GPUs
            ds = map_operator(ds, ClipSplitter, scenes.step_pool(), config=scenes, quality=cfg.quality,
                              models=job.models)
            ds = map_operator(ds, ClipScorer, cfg.quality.pool, config=cfg.quality, models=job.models)
            if cfg.caption.enabled:
                ds = map_operator(ds, FrameReader, cfg.caption.decode_pool, request=frame_request(cfg.caption),
                                  strict=cfg.scenes.strict_decode, schema=CLIPS)
                ds = map_operator(ds, Captioner, cfg.caption.pool, config=cfg.caption, models=job.models)
            job.write(ds)
    return 0 if job.report.accounted else 1


if __name__ == "__main__":
    sys.exit(cli(main))

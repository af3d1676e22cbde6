"""Stage 1: videos -> clips (MAGREF Appendix B.1): scenes, motion and aesthetic filters, captions.

    python pipelines/stage1_clips.py --run-dir RUN [--models tiny] [--set scenes.min_seconds=3]
        [--set caption.enabled=false] [--set caption_pool.actors=8]

Reads RUN/videos (or --input), each ``video_id`` once (the same file at two paths is one
video). Every candidate clip becomes a ``clips`` row: ``kept`` with its scores, caption
and subjects, or filtered with its reason (``too_short``, ``motion``, ``aesthetic``) and
its scores; a video that fails to decode is one ``errors`` row and no clips. Clips are
filtered *before* captioning (the paper captions first): the VLM is the expensive step,
so it only sees clips that survive the cheap filters.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script

from curation.clips.caption import CaptionConfig, Captioner  # noqa: E402
from curation.clips.quality import ClipScorer, QualityConfig  # noqa: E402
from curation.clips.scenes import ClipSplitter, ScenesConfig  # noqa: E402
from pipelines.common import PoolConfig, StageJob, batch_size_of, map_operator  # noqa: E402


@dataclass
class Stage1Config:
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    split_pool: PoolConfig = field(default_factory=PoolConfig)  # CPU decode + scene detection
    score_pool: PoolConfig = field(default_factory=lambda: PoolConfig(actors=1))  # CLIP (GPU if any)
    caption_pool: PoolConfig = field(default_factory=lambda: PoolConfig(actors=1))  # one GPU per actor


def main(argv: list[str] | None = None) -> int:
    job = StageJob("clips", "clips", Stage1Config, __doc__, argv)
    cfg = job.config
    with job:
        videos = job.read_input("videos")
        todo = job.pending(videos, id_column="video_id")  # keeps the first uri of each video_id
        if todo.num_rows:
            ds = job.dataset(todo, rows_per_block=batch_size_of(ClipSplitter, cfg.split_pool))
            # A video's clips stay in one block from the split to the write (common.py's
            # invariant), so the writer commits a video whole.
            ds = map_operator(ds, ClipSplitter, cfg.split_pool, config=cfg.scenes, quality=cfg.quality)
            ds = map_operator(ds, ClipScorer, cfg.score_pool, batch_size=cfg.quality.aesthetic_batch,
                              config=cfg.quality, models=job.models)
            if cfg.caption.enabled:  # generation batch = Ray batch: one generate call per batch
                ds = map_operator(ds, Captioner, cfg.caption_pool, batch_size=cfg.caption.batch_size,
                                  config=cfg.caption, models=job.models)
            job.write(ds)
    return 0 if job.report.accounted else 1


if __name__ == "__main__":
    sys.exit(main())

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

from curation.caption import CaptionConfig, Captioner  # noqa: E402
from curation.envelope import drop_failed_siblings  # noqa: E402
from curation.quality import ClipScorer, QualityConfig  # noqa: E402
from curation.scenes import ClipSplitter, ScenesConfig  # noqa: E402
from pipelines.common import PoolConfig, StageJob, batch_size_of, map_operator  # noqa: E402


@dataclass
class Stage1Config:
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    split_pool: PoolConfig = field(default_factory=PoolConfig)  # CPU tasks: decode, scenes, scoring frames
    score_pool: PoolConfig = field(default_factory=lambda: PoolConfig(actors=1))  # CLIP (GPU if any)
    caption_pool: PoolConfig = field(default_factory=lambda: PoolConfig(actors=1))  # one GPU per actor


# Atomicity: the writer commits all clips of a video together, so from the split to the
# write a video's rows stay in one Ray block. The ops after the split would take whole
# blocks (batch_size=None), but Ray 2.60 refuses that when num_gpus is set, so they use
# an int batch size, on CPU too (one tested path): Ray bundles whole blocks into a task
# and never slices one, and with target_max_block_size=None a task's output is a single
# block. A batch may cut through a video, so a video that fails in one batch may have
# rows processed in another: drop_failed_siblings removes those before the write.


def main(argv: list[str] | None = None) -> int:
    job = StageJob("clips", "clips", Stage1Config, __doc__, argv)
    cfg = job.config
    with job:
        videos = job.read_input("videos")
        todo = job.pending(videos, id_column="video_id")  # keeps the first uri of each video_id
        if todo.num_rows:
            ds = job.dataset(todo, rows_per_block=batch_size_of(ClipSplitter, cfg.split_pool))
            ds.context.target_max_block_size = None  # never re-cut a block (see above)
            ds = map_operator(ds, ClipSplitter, cfg.scenes, cfg.split_pool, init={"quality": cfg.quality})
            ds = map_operator(ds, ClipScorer, cfg.quality, cfg.score_pool, batch_size=cfg.quality.aesthetic_batch,
                              init={"models": job.models})
            if cfg.caption.enabled:  # filter before captioning: the VLM only sees kept clips
                ds = map_operator(ds, Captioner, cfg.caption, cfg.caption_pool, batch_size=cfg.caption.batch_size,
                                  init={"models": job.models})  # one generate call per Ray batch
            ds = ds.map_batches(drop_failed_siblings, batch_size=None, batch_format="pyarrow", num_cpus=0.25)
            job.write(ds)
    return 0 if job.report.accounted else 1


if __name__ == "__main__":
    sys.exit(main())

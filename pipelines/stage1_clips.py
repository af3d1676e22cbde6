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
from pipelines.common import PoolConfig, StageJob, map_kwargs  # noqa: E402


@dataclass
class Stage1Config:
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    split_pool: PoolConfig = field(default_factory=PoolConfig)  # CPU decode + scene detection
    score_pool: PoolConfig = field(default_factory=lambda: PoolConfig(actors=1))  # CLIP (GPU if any)
    caption_pool: PoolConfig = field(default_factory=lambda: PoolConfig(actors=1))  # one GPU per actor


def after_split(kwargs: dict, batch_size: int) -> dict:
    # Atomicity: the writer commits all clips of a video together, so from the split to
    # the write a video's rows stay in one Ray block. The ops below would take whole
    # blocks (batch_size=None), but Ray 2.60 refuses that when num_gpus is set, so they
    # use an int batch size instead, on CPU too (one tested path): Ray then bundles
    # whole blocks into a task without ever slicing one, and with
    # target_max_block_size=None a task's output is a single block. A batch may cut
    # through a video, so a video that fails in one batch may have rows processed in
    # another: drop_failed_siblings removes them before the write.
    return {**kwargs, "batch_size": batch_size}


def main(argv: list[str] | None = None) -> int:
    job = StageJob("clips", "clips", Stage1Config, __doc__, argv)
    cfg = job.config
    with job:
        videos = job.read_input("videos")
        todo = job.pending(videos, id_column="video_id")  # keeps the first uri of each video_id
        if todo.num_rows:
            split = map_kwargs(ClipSplitter, cfg.split_pool)
            ds = job.dataset(todo, rows_per_block=split["batch_size"])
            ds.context.target_max_block_size = None  # never re-cut a block (see after_split)
            ds = ds.map_batches(ClipSplitter, fn_constructor_kwargs={"config": cfg.scenes, "quality": cfg.quality},
                                **split)
            ds = ds.map_batches(ClipScorer, fn_constructor_kwargs={"config": cfg.quality, "models": job.models},
                                **after_split(map_kwargs(ClipScorer, cfg.score_pool), cfg.quality.aesthetic_batch))
            if cfg.caption.enabled:  # generation batch = Ray batch: one generate call per batch
                ds = ds.map_batches(Captioner, fn_constructor_kwargs={"config": cfg.caption, "models": job.models},
                                    **after_split(map_kwargs(Captioner, cfg.caption_pool), cfg.caption.batch_size))
            ds = ds.map_batches(drop_failed_siblings, batch_size=None, batch_format="pyarrow", num_cpus=0.25)
            job.write(ds)
    return 0 if job.report.accounted else 1


if __name__ == "__main__":
    sys.exit(main())

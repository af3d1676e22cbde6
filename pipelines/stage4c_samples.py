"""The samples table: one training record (Eq. 19) per kept clip with at least one reference.

    python pipelines/stage4c_samples.py --run-dir RUN [--set assemble.cross_clip_variants=false]

Cheap and deterministic: it joins what stages 1-4 wrote (clip, caption, faces, objects,
variants, background, cross-clip partners; ``curation/pairs/assemble.py``) and runs no
model, so assembling again gives the same rows. A clip is taken once stage 4 has
finished it and, with cross-clip variants on, once every identity of it has been paired
(``stage4b_cross_pairs.py``). A clip without any face or object reference is recorded as
processed with no sample; a clip an earlier stage failed on is an error row saying which.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from curation.pairs.assemble import AssembleConfig
from pipelines.cli import cli
from pipelines.job import StageJob
from pipelines.joins import ClipSamples, ready, summary_line, wait_for_identities
from pipelines.stages import STAGE
from pipelines.wiring import map_operator
from schemas.command import LOG


@dataclass
class SamplesConfig:
    assemble: AssembleConfig = field(default_factory=AssembleConfig)


def main(argv: list[str] | None = None) -> int:
    job = StageJob(STAGE["samples"], SamplesConfig, __doc__, argv)
    cfg = job.config.assemble
    with job:
        clips, waiting = ready(job.run, job.read_input(), ["pairs"])
        if cfg.cross_clip_variants:
            clips, waiting["cross_clip"] = wait_for_identities(job.run, clips)
        todo = job.pending(clips)
        if summary_line(waiting):
            LOG.info(f"[samples] {summary_line(waiting)}")
        if todo.num_rows:
            todo = ClipSamples.lookups(job.run, todo, cfg.cross_clip_variants)  # once per job, not per task
            ds = job.dataset(todo, rows_per_block=cfg.pool.batch_size)
            ds = map_operator(ds, ClipSamples, cfg.pool, run_uri=job.run.root.uri(), config=cfg)
            job.write(ds)
    return 0 if job.report.accounted else 1


if __name__ == "__main__":
    sys.exit(cli(main))

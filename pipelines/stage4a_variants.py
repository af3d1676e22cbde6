"""Stage 4: kept clips -> variants I' and backgrounds I^Bg (MAGREF Appendix B.4, Eq. 19).

    python pipelines/stage4a_variants.py --run-dir RUN [--models tiny] [--set background.backend=opencv]
        [--set variants.pool.actors=4] [--models editor=/models/flux-kontext]

Takes the kept clips that stages 2 and 3 have finished (``after``). For each: the
references its sample will use (``curation/pairs/requests.py``) get a variant from the
image editor (FLUX.1 Kontext by default), and the clip gets a background: a keyframe with
every object mask and face removed, inpainted (SDXL inpainting, or OpenCV) and augmented.
Writes the ``pairs`` table: one row per variant and one per background, each with its
prompt, seed and model. A clip with no usable reference is recorded as processed with no
rows. Cross-clip identity pairs (``stage4b_cross_pairs.py``) and the samples table
(``stage4c_samples.py``) follow.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from curation.operator import TaskPool, setting
from curation.pairs.backgrounds import BackgroundConfig, BackgroundFrames, Backgrounds
from curation.pairs.variants import Variants, VariantsConfig
from pipelines.cli import cli
from pipelines.job import StageJob
from pipelines.joins import ClipReferences, ready, summary_line
from pipelines.stages import STAGE
from pipelines.wiring import map_operator
from schemas.command import LOG


@dataclass
class Stage4Config:
    after: list[str] = setting(factory=lambda: ["objects", "faces"], help="stages that must have finished a clip")
    references: TaskPool = setting(factory=lambda: TaskPool(batch_size=8, num_cpus=0.5), help="step 1: read refs")
    variants: VariantsConfig = setting(factory=VariantsConfig, help="step 2, actors: the editor")
    background: BackgroundConfig = setting(factory=BackgroundConfig, help="step 3: keyframe on CPU, then inpaint")


def main(argv: list[str] | None = None) -> int:
    job = StageJob(STAGE["pairs"], Stage4Config, __doc__, argv)
    cfg = job.config
    with job:
        clips, waiting = ready(job.run, job.read_input(), cfg.after)
        todo = job.pending(clips)
        if summary_line(waiting):
            LOG.info(f"[pairs] {summary_line(waiting)}")
        if todo.num_rows:
            todo = ClipReferences.lookups(job.run, todo)  # where each clip's rows are: once per job
            ds = job.dataset(todo, rows_per_block=cfg.references.batch_size)
            ds = map_operator(ds, ClipReferences, cfg.references, run_uri=job.run.root.uri(),
                              scope=cfg.variants.scope, variants=cfg.variants.enabled,
                              background=cfg.background.enabled)
            if cfg.variants.enabled:
                ds = map_operator(ds, Variants, cfg.variants.pool, config=cfg.variants, models=job.models)
            if cfg.background.enabled:
                bg = cfg.background
                ds = map_operator(ds, BackgroundFrames, bg.decode_pool, config=bg)
                # OpenCV needs no model: the same step as Ray tasks, no GPU asked.
                pool = bg.pool if bg.backend == "model" else TaskPool(bg.pool.batch_size, bg.pool.num_cpus)
                ds = map_operator(ds, Backgrounds, pool, config=bg, models=job.models)
            job.write(ds)
    return 0 if job.report.accounted else 1


if __name__ == "__main__":
    sys.exit(cli(main))

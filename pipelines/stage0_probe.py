"""Stage 0: probe raw videos into the ``videos`` table.

    python pipelines/stage0_probe.py --input VIDEOS --run-dir RUN [--set probe.min_side=32]

VIDEOS is a folder (recursive), a glob, a .txt list of uris or a Parquet file with a
``uri`` column; local paths and pyarrow filesystem URIs (s3://, gs://) alike. Every
file ends as a ``videos`` row or an ``errors`` row naming the file and the reason.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import pyarrow as pa

from curation.operator import setting
from curation.sources import list_inputs
from curation.video import ProbeConfig, VideoProber
from pipelines.cli import UserError, cli
from pipelines.job import StageJob
from pipelines.stages import STAGE
from pipelines.wiring import map_operator


@dataclass
class Stage0Config:
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    extensions: list[str] | None = setting(None, help='e.g. [".mp4", ".mkv"]; default: every file in a folder')


def main(argv: list[str] | None = None) -> int:
    job = StageJob(STAGE["probe"], Stage0Config, __doc__, argv,
                   input_help="videos: folder, glob, .txt list or Parquet with a 'uri' column")
    if not job.args.input:
        raise UserError("stage 0 needs --input (a folder, glob, .txt list or Parquet list of videos)")
    cfg = job.config
    uris = list_inputs(job.args.input, tuple(cfg.extensions) if cfg.extensions else None)
    with job:
        todo = job.pending(pa.table({"uri": pa.array(uris, pa.string())}))
        if todo.num_rows:
            ds = job.dataset(todo, rows_per_block=cfg.probe.pool.batch_size)
            ds = map_operator(ds, VideoProber, cfg.probe.pool, config=cfg.probe)
            job.write(ds)
    return 0 if job.report.accounted else 1


if __name__ == "__main__":
    sys.exit(cli(main))

"""Evaluation as a resumable Ray Data job: many generated videos, the paper's and OpenS2V's metrics.

    python pipelines/evaluate_videos.py --run-dir RUN --input EVAL_INPUT --videos DIR [--models tiny]
        [--set evaluate.faces=dlib] [--set evaluate.metrics='[motion, aesthetic]'] [--html page.html]

``--input`` is a samples table (Parquet), a release prompt file or OpenS2V-Eval's JSON
(told apart by extension); videos are ``DIR/<key>.mp4``. Every entry is one input of the
ledger: the scorer (``model.evaluate.scorer.Evaluator``, one actor loads the metric models
once) writes its rows to ``RUN/scores`` (one per video and metric), commits them with the
ledger, and a killed run resumes with the entries not yet committed. The driver holds only the
index (ids, videos, where each entry's references are; a samples table is read for its
``sample_id`` and ``caption`` columns only): the scoring actors read the images. A broken entry
(missing video or reference, no face) has rows whose status says why; a crash inside a
metric for one entry is an error row. At the end ``RUN/evaluation/`` gets the summary
(mean + bootstrap 95% interval), OpenS2V's per-metric JSONs and their merged total,
computed from the whole ``scores`` table (a few numbers per video, no images).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from model.evaluate.entries import EntryInputError, index_entries, iter_entries
from model.evaluate.opens2v import VERSIONS, WEIGHTS
from model.evaluate.outputs import write_outputs
from model.evaluate.scorer import EvaluateConfig, Evaluator
from model.evaluate.summary import summary_text
from pipelines.cli import UserError, cli
from pipelines.job import StageJob
from pipelines.stages import Stage
from pipelines.wiring import map_operator

# Not in STAGES: evaluation is not a step of the curation chain run_all walks.
EVALUATE = Stage("evaluate", "scores", "evaluate_videos", None, "entry_id")
INPUT_HELP = "samples table (.parquet/folder), release prompt file, or OpenS2V-Eval JSON; required"


@dataclass
class EvaluateJobConfig:
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


def split_argv(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """This job's own flags; the rest are the stage flags ``StageJob`` parses."""
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--videos")
    own.add_argument("--html")
    own.add_argument("--domain", choices=sorted(WEIGHTS), default="Open-Domain")
    own.add_argument("--opens2v-version", choices=VERSIONS, default="1.0")
    return own.parse_known_args(list(sys.argv[1:] if argv is None else argv))


def main(argv: list[str] | None = None) -> int:
    own, rest = split_argv(argv)
    job = StageJob(EVALUATE, EvaluateJobConfig, __doc__ + "\nextra flags: --videos DIR (required), --html FILE, "
                   "--domain {Human-Domain,Open-Domain,Single-Domain}, --opens2v-version {1.0,1.1} (their harness's "
                   "JSON layout and weights)", rest, INPUT_HELP)
    if not job.args.input or not own.videos:
        raise UserError("give --input (what was generated from) and --videos (the folder of <key>.mp4)")
    cfg = job.config.evaluate
    with job:
        try:  # ids and where the references are: the scoring tasks read the images
            index = index_entries(job.args.input, own.videos)
        except EntryInputError as exc:
            raise UserError(str(exc)) from exc
        todo = job.pending(index)
        if todo.num_rows:
            ds = job.dataset(todo, rows_per_block=cfg.pool.batch_size)
            ds = map_operator(ds, Evaluator, cfg.pool, config=cfg, models=job.models)
            job.write(ds)
        rows = job.run.read("scores", ["entry_id", "metric", "value", "status", "detail", "model"]).to_pylist() \
            if job.run.has("scores") else []
        local = job.run.root.fs.type_name == "local"
        out = Path(job.run.root.join("evaluation").path)
        if local:
            summary = write_outputs(rows, iter_entries(index) if own.html else [], out, own.domain, own.html,
                                    scores_file=False, version=own.opens2v_version)
            print(summary_text(summary), flush=True)
            print(f"[evaluate] OpenS2V {own.domain} total (their merge): {summary['opens2v']['total_score']:.4f}; "
                  f"outputs in {out}", flush=True)
    return 0 if job.report.accounted else 1


if __name__ == "__main__":
    sys.exit(cli(main))

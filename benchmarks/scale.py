"""Scale: per-clip cost of stage 4's joins, ``pending``, ``inspect_run``, compaction and the
samples reader, on synthetic runs of growing size (tables only: no media is decoded).

    python benchmarks/scale.py --clips 1000 10000 100000 [--clips-per-part 4] [--png 16]
    PYTHONPATH=/path/to/old/checkout:tests python benchmarks/scale.py --clips 1000 --worker ...   # "before"

Each size runs in a fresh process (peak RSS is that process's: the driver; the steps run
in-process, as one Ray task each would, so there are no separate workers to measure). The
run is ``tests/scale_data.py``'s: per clip one identity with 2 faces (512-d float32
embedding, a ``--png`` px noise PNG crop), one object (mask + RGBA ref), 3 ``pairs`` rows
(2 variants, 1 background), one ``cross_pairs`` row per 2 clips; parts of
``--clips-per-part`` clips, each with its ledger part, as stages commit blocks.

Steps, per clip:
* ``lookups``: the samples job's driver side (file index of faces/objects/pairs, partners);
  absent before (each task scanned every part instead);
* ``tasks``: ``ClipSamples`` over the first ``--tasks`` tasks of ``--task-clips`` clips (the
  per-task cost is what grew with the run; all tasks = this x clips);
* ``pending``: the samples stage's driver: read its input and anti-join its ledger;
* ``inspect``: ``inspect_run``'s books over the whole run;
* ``compact``: ``pipelines.compact`` of faces/objects/pairs (after it: files per table);
* ``reader``: a samples table of ``--samples`` rows (5 PNGs of ``--png`` px each, parts of
  100 rows): open it, then read the first ``--read`` samples in training order.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def files(folder: Path) -> int:
    return len(list(folder.glob("*.parquet"))) if folder.exists() else 0


def timed(out: dict, name: str, fn, per: int):
    """Run ``fn``; record seconds per item and the process's peak RSS so far."""
    t0 = time.perf_counter()
    result = fn()
    out[name] = (time.perf_counter() - t0) / per
    out["rss_mb"][name] = round(rss_mb())
    return result


def worker(args: argparse.Namespace) -> dict:
    clips = args.clips[0]
    out: dict = {"clips": clips, "rss_mb": {}}
    tmp = Path(tempfile.mkdtemp(prefix="magref-scale-"))
    if not args.reader_only:
        stage4(args, clips, tmp, out)
    reader(args, tmp, out)
    return out


def stage4(args: argparse.Namespace, clips: int, tmp: Path, out: dict) -> None:
    """Build the run, then time pending, lookups, tasks, inspect_run and compaction."""
    from scale_data import build_run

    from curation.pairs.assemble import AssembleConfig
    from pipelines.inspect_run import inspect
    from pipelines.job import StageJob
    from pipelines.joins import ClipSamples
    from pipelines.stage4c_samples import SamplesConfig
    from pipelines.stages import STAGE

    started = time.perf_counter()
    run, _ = build_run(str(tmp / "run"), clips, args.clips_per_part, args.png)
    out["build_s"] = time.perf_counter() - started
    out["files_before"] = {t: files(tmp / "run" / t) for t in ("faces", "objects", "pairs", "errors")}
    out["files_before"]["ledger/faces"] = files(tmp / "run" / "_ledger" / "faces")

    job = StageJob(STAGE["samples"], SamplesConfig, None, ["--run-dir", str(tmp / "run")])
    todo = timed(out, "pending", lambda: job.pending(job.read_input()), clips)
    config = AssembleConfig()
    lookups = getattr(ClipSamples, "lookups", None)
    if lookups:
        todo = timed(out, "lookups", lambda: lookups(run, todo, config.cross_clip_variants), clips)
    step = ClipSamples(str(tmp / "run"), config)
    tasks = min(args.tasks, -(-clips // args.task_clips))

    def run_tasks():
        return sum(step(todo.slice(i * args.task_clips, args.task_clips)).num_rows for i in range(tasks))

    out["samples"] = timed(out, "tasks", run_tasks, tasks * args.task_clips)
    out["inspect_ok"] = timed(out, "inspect", lambda: inspect(run)["ok"], clips)
    try:
        from pipelines.compact import compact_stage
    except ImportError:  # before: no compaction
        compact_stage = None
    if compact_stage:
        def compact_all():
            for stage in ("faces", "objects", "pairs"):
                compact_stage(run, stage, stage, args.target_mb)
        timed(out, "compact", compact_all, clips)
        out["files_after"] = {t: files(tmp / "run" / t) for t in ("faces", "objects", "pairs", "errors")}
        out["files_after"]["ledger/faces"] = files(tmp / "run" / "_ledger" / "faces")
        out["inspect_after_ok"] = inspect(run)["ok"]


def reader(args: argparse.Namespace, tmp: Path, out: dict) -> None:
    """A samples table of ``--samples`` rows; open it, read the first ``--read`` in training order."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from training_data import sample_row

    from schemas.tables import schema_for

    frames = [np.zeros((48, 64, 3), np.uint8)]
    folder = tmp / "samples"
    folder.mkdir()
    template = sample_row("s", "/videos/none.mp4", frames)
    noise = np.random.default_rng(0)
    for start in range(0, args.samples, 100):
        part = [{**template, "sample_id": f"s{i:08d}",
                 "background": _png(noise, args.sample_png)} for i in range(start, min(args.samples, start + 100))]
        pq.write_table(pa.Table.from_pylist(part, schema=schema_for("samples")), folder / f"part-{start:08d}.parquet",
                       row_group_size=25)
    try:
        from model.train.samples_reader import SamplesTable
    except ImportError:  # before: the whole table in memory
        from model.train.data import SamplesTable
    rss_before_reader = rss_mb()
    table = timed(out, "reader_open", lambda: SamplesTable(str(folder)), args.samples)
    order = table.epoch_order(0, 0, 0, 1) if hasattr(table, "epoch_order") else np.arange(len(table))
    timed(out, "reader", lambda: [table.row(int(i)) for i in order[:args.read]], args.read)
    out["reader_rss_growth_mb"] = round(rss_mb() - rss_before_reader)


def _png(rng, side: int) -> bytes:
    """A noise PNG (one of 16 per size: encoding is the slow part)."""
    return _pngs(side)[int(rng.integers(16))]


@functools.lru_cache(maxsize=4)
def _pngs(side: int) -> list[bytes]:
    from curation.images import encode_png

    rng = __import__("numpy").random.default_rng(side)
    return [encode_png(rng.integers(0, 255, (side, side, 3), dtype="uint8")) for _ in range(16)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--clips-per-part", type=int, default=4)
    parser.add_argument("--png", type=int, default=16, help="side of every generated PNG (px)")
    parser.add_argument("--tasks", type=int, default=50, help="stage-4 tasks timed per size")
    parser.add_argument("--task-clips", type=int, default=8)
    parser.add_argument("--target-mb", type=float, default=256.0)
    parser.add_argument("--samples", type=int, default=2000, help="rows of the samples table")
    parser.add_argument("--read", type=int, default=500, help="samples read in training order")
    parser.add_argument("--sample-png", type=int, default=16, help="side of each sample's background PNG (px)")
    parser.add_argument("--reader-only", action="store_true", help="time only the samples reader")
    parser.add_argument("--worker", action="store_true", help="measure one size in this process, print JSON")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.environ.get("PYTHONPATH", str(ROOT)), str(ROOT / "tests")])}
    results = []
    for clips in args.clips:
        argv = [sys.executable, __file__, "--worker", "--clips", str(clips)] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("clips", "worker", "reader_only")
        ] + (["--reader-only"] if args.reader_only else [])
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    steps = ["lookups", "tasks", "pending", "inspect", "compact", "reader_open", "reader"]
    print("\n| clips | " + " | ".join(f"{s} s/clip (RSS MB)" for s in steps) + " |")
    print("|---" * (len(steps) + 1) + "|")
    for r in results:
        cells = [f"{r[s]:.2e} ({r['rss_mb'][s]})" if s in r else "-" for s in steps]
        print(f"| {r['clips']:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

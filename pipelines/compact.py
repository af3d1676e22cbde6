"""Merge a finished stage's small parts into few large files, without changing a row.

    python -m pipelines.compact --run-dir RUN [--table faces] [--target-mb 256] [--row-group-mb 64]

Each block a stage commits is one part per table (and one errors and one ledger part), so
a run of 100k clips leaves tens of thousands of small files, which object stores list
slowly and every reader opens one by one. Compaction rewrites, per stage, the parts
smaller than half the target into files of about ``--target-mb`` (row groups of about
``--row-group-mb``), each sorted by the table's key, so a lookup by id reads few row groups.

The books stay true: the same rows (the stage's table, its ``errors`` rows, its ledger);
each ledger row's ``part`` names the merged file that now holds its input's rows; a
rerun of the stage still skips every input; ``inspect_run`` still balances. It takes the
stage's lock (a running stage refuses it, and it refuses a running stage), touches only
parts named for that stage (``errors/`` is shared by stages that may run at once), and
swaps old parts for new through journals (``schemas/swap.py``): a kill -9 at any moment
leaves the old parts or the new ones, and the next compaction or stage run finishes the swap.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import sys
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.cli import Parser, UserError, cli
from pipelines.ledger import LEDGER, MERGED, RunDir, block_hash, stage_folders
from pipelines.run_lock import StageLock
from pipelines.stages import STAGES
from schemas.io import TMP_PREFIX, Location, list_parts, read_files, remove_temporaries
from schemas.swap import finish_swaps, write_journals
from schemas.tables import key_of

MB = 1 << 20
STOP_AT = "MAGREF_COMPACT_STOP_AT"  # tests: SIGKILL this process at a named step


def _stop_at(step: str) -> None:
    if os.environ.get(STOP_AT) == step:
        os.kill(os.getpid(), 9)


def _groups(folder: Location, names: list[str], target: int, small_only: bool = True) -> list[list[str]]:
    """Consecutive parts, about ``target`` bytes per group; with ``small_only``, parts of half
    the target or more are left alone, and so are groups of one."""
    groups, current, size = [], [], 0
    for name in names:
        bytes_ = folder.fs.get_file_info(posixpath.join(folder.path, name)).size or 0
        if small_only and bytes_ >= target // 2:
            continue
        current.append(name)
        size += bytes_
        if size >= target:
            groups.append(current)
            current, size = [], 0
    groups.append(current)
    return [g for g in groups if len(g) > (1 if small_only else 0)]


def _merge(folder: Location, group: list[str], kind: str, name: str, row_group: int,
           renamed: dict[str, str] | None = None) -> tuple[str, str]:
    """Write one group's rows, sorted by id, as a temporary part; returns (temporary, final) names.

    ``renamed`` (ledger only): old part name -> the merged part that holds those rows now.
    """
    table = read_files(folder.fs, [posixpath.join(folder.path, n) for n in group], kind)
    if renamed:
        parts = pc.fill_null(pc.index_in(table.column("part"), value_set=pa.array(list(renamed))), -1)
        mapped = [list(renamed.values())[i] if i >= 0 else p
                  for i, p in zip(parts.to_pylist(), table.column("part").to_pylist())]
        table = table.set_column(table.column_names.index("part"), "part", pa.array(mapped, pa.string()))
    sort_by = ["input"] if kind in ("errors", "ledger") else [key_of(kind)]
    table = table.sort_by([(c, "ascending") for c in sort_by])
    rows = max(1, int(row_group * table.num_rows / max(table.nbytes, 1)))
    tmp = f"{TMP_PREFIX}part-{name}-{uuid.uuid4().hex[:8]}.tmp"
    pq.write_table(table, posixpath.join(folder.path, tmp), filesystem=folder.fs, compression="zstd",
                   row_group_size=rows)
    return tmp, f"part-{name}.parquet"


def compact_stage(run: RunDir, stage: str, table: str, target_mb: float = 256, row_group_mb: float = 64) -> dict:
    """Compact one stage's parts (under its lock); returns {folder: (parts before, parts after)}."""
    lock = StageLock(run.root, stage)
    lock.acquire()
    try:
        folders = stage_folders(run, stage, table)
        finish_swaps(folders, stage)  # a swap a kill interrupted
        target, row_group = int(target_mb * MB), int(row_group_mb * MB)
        prefix = f"part-{stage}-"
        for folder in folders:  # an uncommitted swap's temporaries (a stage holding this lock writes none)
            remove_temporaries(folder, "" if folder is folders[2] else prefix)
        plans, renamed, counts = [], {}, {}
        for folder, kind in zip(folders[:2], (table, "errors")):
            own = [n for n in map(posixpath.basename, list_parts(folder)) if n.startswith(prefix)]
            new, old = [], []
            for group in _groups(folder, own, target):
                name = f"{stage}-{MERGED}{block_hash(group)}"
                new.append(_merge(folder, group, kind, name, row_group))
                old += group
                if kind == table:
                    renamed.update({g[len(prefix):-len(".parquet")]: name[len(stage) + 1:] for g in group})
            counts[folder.uri()] = (len(own), len(own) - len(old) + len(new))
            plans.append((folder, old, new))
        # The ledger is ids and counts: when its rows must name merged parts, or it is in many
        # parts, it is rewritten whole (in target-sized files), each row's ``part`` remapped.
        ledger = folders[2]
        own = [posixpath.basename(p) for p in list_parts(ledger)]
        groups = _groups(ledger, own, target, small_only=not renamed)
        new = [_merge(ledger, g, "ledger", f"{MERGED}{block_hash(g)}", row_group, renamed) for g in groups]
        old = [n for g in groups for n in g]
        counts[ledger.uri()] = (len(own), len(own) - len(old) + len(new))
        plans.append((ledger, old, new))
        _stop_at("written")
        if any(old for _, old, _ in plans):
            write_journals(plans, ledger, stage)
            _stop_at("committed")
            finish_swaps(folders[:1], stage)
            _stop_at("half")
            finish_swaps(folders, stage)
        return counts
    finally:
        lock.release()


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m pipelines.compact", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="the run directory")
    parser.add_argument("--table", help="only the stage(s) writing this table (default: every stage)")
    parser.add_argument("--target-mb", type=float, default=256.0, help="size of a merged file (default 256)")
    parser.add_argument("--row-group-mb", type=float, default=64.0, help="row group size (default 64)")
    args = parser.parse_args(argv)
    run = RunDir.of(args.run_dir)
    if not run.root.join(LEDGER).exists():
        raise UserError(f"{run.root.uri()}: no run here (no {LEDGER}/ folder); pass the run directory")
    stages = [s for s in STAGES if args.table in (None, s.table)]
    if not stages:
        raise UserError(f"--table {args.table}: no stage writes it; one of "
                        f"{', '.join(sorted({s.table for s in STAGES}))}")
    for stage in stages:
        if not run.ledger(stage.name).exists():
            continue
        counts = compact_stage(run, stage.name, stage.table, args.target_mb, args.row_group_mb)
        for folder, (before, after) in counts.items():
            if before != after:
                print(f"[compact] {stage.name}: {folder}: {before} -> {after} parts", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))

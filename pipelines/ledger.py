"""Resume and atomic writes: the run directory, the commit of a block, the ledger.

A stage job reads its inputs, keeps the ones the stage's *ledger* does not list yet,
maps them through its operators on Ray Data, and hands the result to ``commit`` in
whole blocks. ``commit`` writes, for one block, the table part, the errors part and
then the ledger part (one row per input), each atomically; the ledger part is the
commit record. On start, parts that no ledger part names (left by a killed job) are
deleted, so a rerun after a kill ends with every input accounted once:

    RUN/<table>/part-<stage>-<hash>.parquet      output rows (kept and filtered)
    RUN/errors/part-<stage>-<hash>.parquet       one row per failed input
    RUN/_ledger/<stage>/part-<hash>.parquet      one row per finished input

``<hash>`` comes from the input ids of the commit, so a Ray task retry rewrites the
same files instead of adding copies.

Fewer, larger parts: ``StageJob.write`` first folds each block to one row per input
(``pack_block``: list columns, ``curation.envelope.group_inputs``), so a Ray batch of N rows
is N *whole* inputs; ``commit_grouped`` then takes batches of ``--part-inputs`` inputs (Ray
bundles blocks into one task for that) and commits them in one part per table, or in several
when their rows pass ``--part-mb``. Each commit is still a pure function of its task's input
bundle, never a buffer kept in an actor, so a lost node's task reruns with the same names.

Invariant: all rows of one input travel in one block from the operator that makes
them to ``commit``. ``StageJob.dataset`` turns off Ray's block re-splitting
(``target_max_block_size=None``), and Ray bundles whole blocks into a task without
slicing one, so every op after an expansion keeps a video's clips together even with
an int ``batch_size`` (Ray 2.60 refuses ``batch_size=None`` with GPUs). A batch inside
a task may still cut through an input, so an input that failed in one batch may have
rows from another: ``commit`` keeps only its error row (``drop_failed_siblings``).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from curation.envelope import drop_failed_siblings, group_inputs, ungroup_inputs
from schemas.io import Filter, Location, list_parts, read_table, remove_temporaries, write_part
from schemas.swap import finish_swaps
from schemas.tables import (EMPTY, ENVELOPE_COLUMNS, ERROR, ERROR_MESSAGE, ERROR_TRACEBACK, ERROR_TYPE, INPUT,
                            schema_for)

LEDGER = "_ledger"
MERGED = "merged-"  # name of a part compaction wrote: part-<stage>-merged-<hash>

@dataclass(frozen=True)
class RunDir:
    root: Location

    @classmethod
    def of(cls, uri: "str | RunDir") -> "RunDir":
        """The run at ``uri`` (a path or pyarrow URI); a ``RunDir`` passes through (tests hand
        in a run on a wrapping filesystem)."""
        return uri if isinstance(uri, RunDir) else cls(Location.of(uri))

    def table(self, kind: str) -> Location:
        return self.root.join(kind)

    def ledger(self, stage: str) -> Location:
        return self.root.join(LEDGER, stage)

    def read(self, kind: str, columns: list[str] | None = None, filter: Filter | None = None) -> pa.Table:
        """Table ``kind`` of this run; ``columns``/``filter`` are pushed down into the reader."""
        return read_table(self.table(kind), kind, columns, filter)

    def has(self, kind: str) -> bool:
        """Whether table ``kind`` has at least one complete part here."""
        return bool(list_parts(self.table(kind)))

    def read_ledger(self, stage: str) -> pa.Table:
        return read_table(self.ledger(stage), "ledger")


def block_hash(input_ids: Iterable[str]) -> str:
    return hashlib.blake2b("\n".join(sorted(input_ids)).encode(), digest_size=10).hexdigest()


def stage_folders(run: RunDir, stage: str, table: str) -> list[Location]:
    """The folders a stage writes, in the order a swap finishes them (its ledger last)."""
    return [run.table(table), run.table("errors"), run.ledger(stage)]


def clean_orphans(run: RunDir, stage: str, table: str) -> int:
    """Delete temporaries and parts of ``stage`` that no ledger row commits.

    First finishes a compaction a kill interrupted (``schemas/swap.py``), so the ledger and
    the parts agree. Only this stage's own temporaries are touched: ``errors/`` is shared by
    stages that may be running right now. Merged parts (``pipelines/compact.py``) are never
    orphans: only a committed swap puts them in place.
    """
    folders = stage_folders(run, stage, table)
    finish_swaps(folders, stage)
    ledger = run.read_ledger(stage).column("part")
    committed = set(ledger.unique().to_pylist())
    prefix = f"part-{stage}-"
    removed = remove_temporaries(folders[0]) + remove_temporaries(folders[1], prefix)
    removed += remove_temporaries(folders[2])
    for folder in folders[:2]:
        for path in list_parts(folder):
            name = os.path.basename(path)
            key = name[len(prefix):-len(".parquet")]
            if name.startswith(prefix) and not key.startswith(MERGED) and key not in committed:
                folder.fs.delete_file(path)
                removed += 1
    return removed


def commit(batch: pa.Table, run_uri: str, stage: str, table: str) -> pa.Table:
    """Write one block's outputs, errors and ledger entries; return a one-row summary.

    Runs inside Ray (``map_batches(commit, batch_size=None)``), so it takes a uri,
    not a live object.
    """
    run = RunDir.of(run_uri)
    now = datetime.now(timezone.utc)
    batch = drop_failed_siblings(batch)
    inputs = batch.column(INPUT).to_pylist()
    name = block_hash(set(inputs))
    status = batch.column("status")
    is_error = pc.fill_null(pc.equal(status, ERROR), False)
    is_output = pc.and_(pc.invert(is_error), pc.invert(pc.fill_null(pc.equal(status, EMPTY), False)))

    outputs = batch.filter(is_output)
    schema = schema_for(table)
    outputs = outputs.select([c for c in schema.names if c in outputs.column_names])
    missing = [c for c in schema.names if c not in outputs.column_names]
    for column in missing:  # columns a stage never sets for some rows (e.g. caption of filtered clips)
        outputs = outputs.append_column(schema.field(column).with_nullable(True),
                                        pa.nulls(outputs.num_rows, schema.field(column).type))
    write_part(outputs, run.table(table), table, name=f"{stage}-{name}", source=f"stage {stage} output")

    failed = batch.filter(is_error).to_pylist()
    first_error: dict[str, dict] = {}
    for row in failed:
        first_error.setdefault(row[INPUT], row)
    errors = pa.Table.from_pylist([
        {"stage": stage, "input": input_id, "error_type": row[ERROR_TYPE] or "Error",
         "message": row[ERROR_MESSAGE] or "", "traceback": row[ERROR_TRACEBACK], "time": now}
        for input_id, row in first_error.items()], schema=schema_for("errors"))
    write_part(errors, run.table("errors"), "errors", name=f"{stage}-{name}")

    statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for input_id, row_status in zip(inputs, status.to_pylist()):
        if row_status not in (ERROR, EMPTY):
            statuses[input_id][row_status or "kept"] += 1
    ledger = pa.Table.from_pylist([
        {"stage": stage, "input": input_id, "rows": sum(statuses[input_id].values()),
         "statuses": json.dumps(dict(statuses[input_id]), sort_keys=True),
         "error_type": first_error[input_id][ERROR_TYPE] if input_id in first_error else None,
         "part": name, "time": now}
        for input_id in dict.fromkeys(inputs)], schema=schema_for("ledger"))
    write_part(ledger, run.ledger(stage), "ledger", name=name)  # last: this is the commit
    return summarize(ledger)


def pack_block(block: pa.Table, table: str) -> pa.Table:
    """One row per input of a whole block (list columns), keeping only what a commit writes.

    Runs on whole blocks (``batch_size=None``), where every input is complete, so the
    failed-sibling rule applies here; columns the table does not declare (frames, scratch)
    are dropped before the rows travel to the commit, and all-null columns get the table's
    type so grouped blocks from different tasks concatenate.
    """
    block = drop_failed_siblings(block)
    schema = schema_for(table)
    keep = [name for name in block.column_names
            if name in schema.names or name in ENVELOPE_COLUMNS or name == "status"]
    block = block.select(keep)
    for name in keep:
        if name in schema.names and pa.types.is_null(block.schema.field(name).type):
            typed = pa.nulls(block.num_rows, schema.field(name).type)
            block = block.set_column(block.column_names.index(name), name, typed)
    return group_inputs(block)


def commit_grouped(batch: pa.Table, run_uri: str, stage: str, table: str,
                   part_inputs: int, part_mb: float) -> pa.Table:
    """Commit a batch of packed inputs (``pack_block`` rows) as few parts as the limits allow.

    The batch is cut, in order, into runs of at most ``part_inputs`` inputs whose rows stay
    under ``part_mb`` megabytes (a single input larger than that still makes one part);
    each run is one ``commit``. Returns one summary row per commit.
    """
    limit = part_mb * 1e6
    summaries, start, size = [], 0, 0.0
    for i in range(batch.num_rows):
        row_bytes = batch.slice(i, 1).nbytes
        if i > start and (i - start >= part_inputs or size + row_bytes > limit):
            summaries.append(commit(ungroup_inputs(batch.slice(start, i - start)), run_uri, stage, table))
            start, size = i, 0.0
        size += row_bytes
    if batch.num_rows > start:
        summaries.append(commit(ungroup_inputs(batch.slice(start)), run_uri, stage, table))
    return pa.concat_tables(summaries) if summaries else summarize(schema_for("ledger").empty_table())


def summarize(ledger: pa.Table) -> pa.Table:
    """Counts by status and error type of some ledger rows, as one JSON row."""
    counts: collections.Counter = collections.Counter()
    errors: collections.Counter = collections.Counter()
    empty = 0
    for row in ledger.select(["statuses", "error_type", "rows"]).to_pylist():
        counts.update(json.loads(row["statuses"]))
        if row["error_type"]:
            errors[row["error_type"]] += 1
        elif not row["rows"]:
            empty += 1
    return pa.table({"inputs": [ledger.num_rows], "statuses": [json.dumps(counts)],
                     "errors": [json.dumps(errors)], "empty": [empty]})


def totals(ledger: pa.Table) -> dict[str, Any]:
    """Cumulative counts of a stage over all its runs, from its ledger."""
    row = summarize(ledger).to_pylist()[0]
    return {"inputs": row["inputs"], "statuses": json.loads(row["statuses"]),
            "errors": json.loads(row["errors"]), "empty": row["empty"]}



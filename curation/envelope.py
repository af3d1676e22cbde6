"""How an operator reports what happened to each input, without knowing about tables.

Operators take and return ``pyarrow.Table`` batches. Every returned row carries the
input's id in ``_input``. An input that fails becomes one *error row* (the envelope's
error columns set, status ``_error``); an input that yields nothing becomes one
*empty row* (status ``_empty``). ``pipelines/ledger.py`` (``commit``) turns error rows
into the errors table and empty rows into ledger entries, so no input is ever dropped
silently, and later operators in a chain skip rows that are already settled.
"""

from __future__ import annotations

import itertools
import traceback
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from schemas.tables import EMPTY, ERROR, ERROR_MESSAGE, ERROR_TRACEBACK, ERROR_TYPE, INPUT, KEPT

TRACEBACK_FRAMES = 4


def error_row(input_id: str, exc: BaseException, **columns: Any) -> dict[str, Any]:
    """The row that stands for an input that failed with ``exc``."""
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-TRACEBACK_FRAMES))
    return {**columns, INPUT: input_id, "status": ERROR, ERROR_TYPE: type(exc).__name__,
            ERROR_MESSAGE: str(exc) or type(exc).__name__, ERROR_TRACEBACK: tail[-4000:]}


def empty_row(input_id: str) -> dict[str, Any]:
    """The row that stands for an input that was processed and yielded no output row."""
    return {INPUT: input_id, "status": EMPTY}


def per_input(rows: Iterable[dict[str, Any]], input_column: str,
              process: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run ``process`` on each input row; an exception settles only that input.

    ``process`` returns the output rows for one input (possibly none). Each gets the
    input id; no rows at all becomes an empty row.
    """
    out: list[dict[str, Any]] = []
    for row in rows:
        input_id = str(row[input_column])
        try:
            produced = process(row)
        except Exception as exc:  # noqa: BLE001 - any failure of one input is that input's error
            out.append(error_row(input_id, exc))
            continue
        if not produced:
            out.append(empty_row(input_id))
        for item in produced:
            item[INPUT] = input_id
            out.append(item)
    return out


def to_table(rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> pa.Table:
    """Rows to a table with the envelope columns always present (null when unused).

    With ``schema``, known columns get their declared types even when every value in
    the batch is null (so batches concatenate); other columns are inferred.
    """
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    for column in (INPUT, "status", ERROR_TYPE, ERROR_MESSAGE, ERROR_TRACEBACK):
        names.setdefault(column, None)
    arrays, fields = [], []
    for name in names:
        values = [row.get(name) for row in rows]
        if schema is not None and name in schema.names:
            field = schema.field(name).with_nullable(True)
        elif name in (INPUT, "status", ERROR_TYPE, ERROR_MESSAGE, ERROR_TRACEBACK):
            field = pa.field(name, pa.string())
        else:
            field = pa.field(name, pa.array(values).type)
        arrays.append(pa.array(values, type=field.type))
        fields.append(field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def live_mask(batch: pa.Table) -> pa.ChunkedArray:
    """Rows a later operator should still work on: no error, not empty, not filtered."""
    if "status" not in batch.column_names:
        return pa.chunked_array([pa.array([True] * batch.num_rows, pa.bool_())])
    status = batch.column("status")
    return pc.fill_null(pc.equal(status, KEPT), True)


def apply_to_live(batch: pa.Table, operator: Callable[[pa.Table], pa.Table]) -> pa.Table:
    """Call ``operator`` on the live rows only and put the settled rows back after them.

    This is what lets a chain of operators (score, then caption) skip rows an earlier
    one already filtered or failed, while every row still reaches the writer.
    """
    mask = live_mask(batch)
    live = batch.filter(mask)
    settled = batch.filter(pc.invert(mask))
    result = operator(live) if live.num_rows else live
    if not settled.num_rows:
        return result
    if not result.num_rows:
        return settled
    return pa.concat_tables([result, settled], promote_options="permissive")


def run_isolated(batch: pa.Table, fn: Callable[[pa.Table], pa.Table], schema: pa.Schema | None = None) -> pa.Table:
    """Call ``fn`` (a model step) on the live rows; if it raises, retry input by input.

    Only the inputs that still fail alone become error rows (``settle_failures``); settled
    rows pass through untouched. Batching is what makes GPU steps fast, and one bad clip
    must not fail the others in its batch: this is the one place that reconciles the two.
    """
    failed: dict[str, BaseException] = {}

    def isolated(live: pa.Table) -> pa.Table:
        inputs = pc.unique(live.column(INPUT)).to_pylist()
        try:
            return fn(live)
        except Exception as exc:  # noqa: BLE001 - find the culprit below
            if len(inputs) == 1:
                failed[inputs[0]] = exc
                return live
        parts = []
        for input_id in inputs:
            group = live.filter(pc.equal(live.column(INPUT), input_id))
            try:
                parts.append(fn(group))
            except Exception as exc:  # noqa: BLE001 - settle_failures turns it into the input's error row
                failed[input_id] = exc
                parts.append(group)
        return pa.concat_tables(parts, promote_options="permissive")

    return settle_failures(apply_to_live(batch, isolated), failed, schema)


def settle_failures(batch: pa.Table, failed: dict[str, BaseException], schema: pa.Schema | None = None) -> pa.Table:
    """Replace every row of each input in ``failed`` by that input's one error row.

    For operators after an expansion (one input, many rows): when one of an input's
    rows fails, the input as a whole goes to the errors table, not half of it.
    """
    if not failed:
        return batch
    keep = pc.invert(pc.is_in(batch.column(INPUT), value_set=pa.array(list(failed), pa.string())))
    errors = to_table([error_row(input_id, exc) for input_id, exc in failed.items()], schema)
    return pa.concat_tables([batch.filter(keep), errors], promote_options="permissive")


def drop_failed_siblings(batch: pa.Table) -> pa.Table:
    """Keep only the error row of an input that has one (its other rows may have been
    processed in another batch of the same block before the failure)."""
    if INPUT not in batch.column_names or not batch.num_rows:
        return batch
    is_error = pc.fill_null(pc.equal(batch.column("status"), ERROR), False)
    failed = pc.unique(batch.filter(is_error).column(INPUT))
    if not len(failed):
        return batch
    sibling = pc.and_(pc.is_in(batch.column(INPUT), value_set=failed), pc.invert(is_error))
    return batch.filter(pc.invert(sibling))


def group_inputs(batch: pa.Table) -> pa.Table:
    """One row per input: every column becomes a list of that input's values, in row order.

    With this in front of it, a Ray batch of ``n`` rows is ``n`` *whole* inputs, however
    many rows each has; ``ungroup_inputs`` is its exact inverse. See ``map_operator``.
    """
    if not batch.num_rows:
        return pa.table({name: pa.array([], pa.list_(batch.schema.field(name).type)) for name in batch.column_names})
    inputs = batch.column(INPUT).to_pylist()
    first: dict[Any, int] = {}
    for position, input_id in enumerate(inputs):
        first.setdefault(input_id, len(first))
    order = sorted(range(len(inputs)), key=lambda i: (first[inputs[i]], i))
    ordered = batch.take(pa.array(order, pa.int64()))
    counts = [0] * len(first)
    for input_id in inputs:
        counts[first[input_id]] += 1
    offsets = pa.array([0, *itertools.accumulate(counts)], pa.int32())
    return pa.table({name: pa.ListArray.from_arrays(offsets, ordered.column(name).combine_chunks())
                     for name in batch.column_names})


def ungroup_inputs(grouped: pa.Table) -> pa.Table:
    """The rows ``group_inputs`` folded, back as a flat table.

    When Ray joins grouped blocks into one batch, a column that one block lacks (say, a
    block of error rows only) is filled with *null lists*, which flatten to nothing; each
    stands for as many nulls as its input has rows (the ``INPUT`` list's length).
    """
    lengths = pc.list_value_length(grouped.column(INPUT)).to_pylist()
    return pa.table({name: _flatten(grouped.column(name).combine_chunks(), lengths) for name in grouped.column_names})


def _flatten(column: pa.ListArray, lengths: list[int]) -> pa.Array:
    flat = pc.list_flatten(column)
    if not column.null_count:
        return flat
    take: list[int | None] = []
    position = 0
    for valid, length in zip(column.is_valid().to_pylist(), lengths):
        if valid:
            take.extend(range(position, position + length))
            position += length
        else:
            take.extend([None] * length)
    return flat.take(pa.array(take, pa.int64()))


def put_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """Set column ``name`` to ``values``, replacing it or appending it."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), pa.field(name, values.type), values)
    return table.append_column(pa.field(name, values.type), values)

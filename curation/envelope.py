"""How an operator reports what happened to each input, without knowing about tables.

Operators take and return ``pyarrow.Table`` batches. Every returned row carries the
input's id in ``_input``. An input that fails becomes one *error row* (the envelope's
error columns set, status ``_error``); an input that yields nothing becomes one
*empty row* (status ``_empty``). ``pipelines/common.py`` turns error rows into the
errors table and empty rows into ledger entries, so no input is ever dropped
silently, and later operators in a chain skip rows that are already settled.
"""

from __future__ import annotations

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


def put_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """Set column ``name`` to ``values``, replacing it or appending it."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), pa.field(name, values.type), values)
    return table.append_column(pa.field(name, values.type), values)

"""Check a table against its schema, with errors that say where and what."""

from __future__ import annotations

import pyarrow as pa

from schemas.tables import schema_for


class SchemaError(ValueError):
    """A table does not match its schema. The message names the file and the column."""

    def __init__(self, source: str, column: str | None, problem: str):
        self.source, self.column, self.problem = source, column, problem
        where = f"column {column!r}" if column else "table"
        super().__init__(f"{source}: {where}: {problem}")


def validate(table: pa.Table, kind: str, source: str = "<memory>", columns: list[str] | None = None) -> pa.Table:
    """Return ``table`` cast to the ``kind`` schema, or raise ``SchemaError``.

    Missing columns, extra columns, wrong types (an int where a string belongs), and
    nulls in non-nullable columns are errors; column order is not (we reorder).
    A column may be cast only when pyarrow can do it without loss (int32 -> int64,
    a large_string -> string), never string -> number. ``columns`` checks a projection:
    only those columns of the schema, in that order.
    """
    schema = schema_for(kind)
    if columns is not None:
        unknown = [c for c in columns if c not in schema.names]
        if unknown:
            raise SchemaError(source, unknown[0], f"not a column of table {kind!r}")
        schema = pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)
    expected = set(schema.names)
    found = set(table.column_names)
    missing = [name for name in schema.names if name not in found]
    if missing:
        raise SchemaError(source, missing[0], f"missing (table {kind!r} needs {', '.join(missing)})")
    extra = sorted(found - expected)
    if extra:
        raise SchemaError(source, extra[0], f"not a column of table {kind!r}")
    columns = []
    for field in schema:
        column = table.column(field.name)
        if not column.type.equals(field.type):
            if not _safe_cast(column.type, field.type):
                raise SchemaError(source, field.name, f"expected {field.type}, found {column.type}")
            try:
                column = column.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise SchemaError(source, field.name, f"expected {field.type}, found {column.type}: {err}") from None
        if not field.nullable and column.null_count:
            raise SchemaError(source, field.name, f"{column.null_count} null value(s) in a non-nullable column")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _safe_cast(found: pa.DataType, expected: pa.DataType) -> bool:
    """Whether ``found`` is a lossless relative of ``expected`` (same family)."""
    if pa.types.is_null(found):
        return True
    families = (
        (pa.types.is_integer, pa.types.is_integer),
        (pa.types.is_floating, pa.types.is_floating),
        (pa.types.is_integer, pa.types.is_floating),
        (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), pa.types.is_string),
        (lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t), pa.types.is_binary),
        (pa.types.is_timestamp, pa.types.is_timestamp),
        (pa.types.is_boolean, pa.types.is_boolean),
    )
    if any(is_found(found) and is_expected(expected) for is_found, is_expected in families):
        return True
    nested = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if any(t(found) for t in nested) and any(t(expected) for t in nested):
        return _safe_cast(found.value_type, expected.value_type)
    if pa.types.is_struct(found) and pa.types.is_struct(expected):
        names = {f.name: f.type for f in found}
        return all(f.name in names and _safe_cast(names[f.name], f.type) for f in expected)
    return False

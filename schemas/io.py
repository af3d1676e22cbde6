"""Reading and writing tables: local paths and pyarrow filesystem URIs alike.

A table is a folder of Parquet *parts*. A part is written under a hidden temporary
name and moved into place only when complete, so a killed writer leaves at most a
hidden ``.part-*.tmp`` file that every reader here (and pyarrow / Ray / DuckDB
readers, which skip names starting with ``.``) ignores. Parts are never edited.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from schemas.tables import schema_for
from schemas.validate import SchemaError, validate

PART_SUFFIX = ".parquet"
TMP_PREFIX = "."


@dataclass(frozen=True)
class Location:
    """A filesystem plus a path on it (what ``pyarrow.fs.FileSystem.from_uri`` returns)."""

    fs: pafs.FileSystem
    path: str

    @classmethod
    def of(cls, uri: str) -> "Location":
        if "://" not in uri:
            # A local path: relative paths stay relative to the cwd, as users expect.
            return cls(pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri)))
        fs, path = pafs.FileSystem.from_uri(uri)
        return cls(fs, path)

    def join(self, *parts: str) -> "Location":
        return Location(self.fs, posixpath.join(self.path, *parts))

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def uri(self) -> str:
        if isinstance(self.fs, pafs.LocalFileSystem):
            return self.path
        return f"{self.fs.type_name}://{self.path}"


@contextmanager
def atomic_write(final: Location) -> Iterator[Location]:
    """A hidden temporary beside ``final`` to write; moved onto ``final`` only when the block
    completes, deleted when it raises.

    The one way this project writes a file others read (parts, manifests, ``run.json``,
    cache entries, weights, videos): a killed writer never leaves a file that looks
    complete, only a ``.NAME.*.tmp`` that readers skip and ``remove_temporaries`` deletes.
    On a local filesystem ``tmp.path`` is an ordinary path for writers that take one.
    """
    parent = posixpath.dirname(final.path)
    if parent:
        final.fs.create_dir(parent, recursive=True)
    tmp = Location(final.fs, posixpath.join(
        parent, f"{TMP_PREFIX}{posixpath.basename(final.path)}.{uuid.uuid4().hex[:8]}.tmp"))
    try:
        yield tmp
        final.fs.move(tmp.path, final.path)
    except BaseException:
        if tmp.exists():
            tmp.fs.delete_file(tmp.path)
        raise


def write_bytes(final: Location, data: bytes) -> None:
    """Write ``data`` to ``final`` atomically (``atomic_write``)."""
    with atomic_write(final) as tmp, tmp.fs.open_output_stream(tmp.path) as out:
        out.write(data)


def list_parts(folder: Location) -> list[str]:
    """Complete part files of a table folder, sorted; temporaries are not listed."""
    info = folder.fs.get_file_info(folder.path)
    if info.type == pafs.FileType.NotFound:
        return []
    selector = pafs.FileSelector(folder.path, recursive=False)
    return sorted(
        f.path for f in folder.fs.get_file_info(selector)
        if f.type == pafs.FileType.File
        and f.base_name.endswith(PART_SUFFIX)
        and not f.base_name.startswith((TMP_PREFIX, "_"))
    )


Filter = list[tuple[str, str, Any]]  # pyarrow's conjunction form: [("status", "==", "kept"), ...]


def read_table(folder: Location, kind: str, columns: list[str] | None = None,
               filter: Filter | None = None, validate_parts: bool = True) -> pa.Table:
    """Read the parts of a table folder, each validated against the ``kind`` schema.

    Validation is per part so an error names the offending file. ``columns`` reads only
    those columns and ``filter`` only matching rows (``[(column, op, value), ...]``, all
    must hold): both are pushed down into the Parquet reader, so a column that is not
    asked for (a PNG, an embedding) is never read. Each part's footer is still checked
    whole (names and types), which costs no data reads.
    """
    schema = schema_for(kind)
    wanted = list(columns or schema.names)
    needed = wanted + [c for c, _, _ in filter or [] if c not in wanted]
    tables = []
    for path in list_parts(folder):
        try:
            if validate_parts:
                validate(pq.read_schema(path, filesystem=folder.fs).empty_table(), kind, source=path)
            part = pq.read_table(path, filesystem=folder.fs, columns=needed, filters=filter or None)
        except (pa.ArrowInvalid, OSError) as err:
            raise SchemaError(path, None, f"unreadable Parquet file: {err}") from None
        if validate_parts:
            part = validate(part, kind, source=path, columns=needed)
        tables.append(part.select(wanted))
    if not tables:
        return pa.Table.from_pylist([], schema=pa.schema([schema.field(c) for c in wanted]))
    return pa.concat_tables(tables)


def write_part(table: pa.Table, folder: Location, kind: str, name: str | None = None,
               source: str | None = None) -> str | None:
    """Validate ``table`` and write it as one part of the ``kind`` table, atomically.

    ``name`` should be derived from the rows' ids, so that a retried task rewrites the
    same part instead of adding a duplicate one. Returns the part's path, or ``None``
    for an empty table (no empty files to clutter the folder).
    """
    if table.num_rows == 0:
        return None
    table = validate(table, kind, source=source or f"part for {folder.uri()}")
    name = name or uuid.uuid4().hex
    final = folder.join(f"part-{name}{PART_SUFFIX}")
    with atomic_write(final) as tmp:
        pq.write_table(table, tmp.path, filesystem=tmp.fs, compression="zstd")
    return final.path


def remove_temporaries(folder: Location) -> int:
    """Delete parts left half-written by a killed job. Returns how many were removed."""
    info = folder.fs.get_file_info(folder.path)
    if info.type == pafs.FileType.NotFound:
        return 0
    stale = [f.path for f in folder.fs.get_file_info(pafs.FileSelector(folder.path))
             if f.base_name.startswith(TMP_PREFIX) and f.base_name.endswith(".tmp")]
    for path in stale:
        folder.fs.delete_file(path)
    return len(stale)


def write_table(table: pa.Table, path: str, kind: str) -> None:
    """Write a whole table as one validated Parquet file (a manifest others can read)."""
    loc = Location.of(path)
    table = validate(table, kind, source=path)
    with atomic_write(loc) as tmp:
        pq.write_table(table, tmp.path, filesystem=tmp.fs, compression="zstd")


def read_manifest(path: str, kind: str, columns: list[str] | None = None,
                  filter: Filter | None = None) -> pa.Table:
    """Read a table from one Parquet file or a table folder, validated, naming the file on error.

    ``columns`` and ``filter`` as in ``read_table`` (pushed down, never read otherwise).
    """
    loc = Location.of(path)
    info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.Directory:
        return read_table(loc, kind, columns, filter)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{path}: no such file or folder")
    wanted = list(columns or schema_for(kind).names)
    needed = wanted + [c for c, _, _ in filter or [] if c not in wanted]
    try:
        validate(pq.read_schema(loc.path, filesystem=loc.fs).empty_table(), kind, source=path)
        table = pq.read_table(loc.path, filesystem=loc.fs, columns=needed, filters=filter or None)
    except (pa.ArrowInvalid, OSError) as err:
        raise SchemaError(path, None, f"unreadable Parquet file: {err}") from None
    return validate(table, kind, source=path, columns=needed).select(wanted)

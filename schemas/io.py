"""Reading and writing tables: local paths and pyarrow filesystem URIs alike.

A table is a folder of Parquet *parts*. A part is written under a hidden temporary
name and moved into place only when complete, so a killed writer leaves at most a
hidden ``.part-*.tmp`` file that every reader here (and pyarrow / Ray / DuckDB
readers, which skip names starting with ``.``) ignores. Parts are never edited.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from schemas.tables import schema_for
from schemas.validate import SchemaError, validate

PART_SUFFIX = ".parquet"
TMP_PREFIX = "."
SWAP_PREFIX = "_compact-"  # a folder's swap journal: ``_compact-<stage>.json`` (``pipelines/compact.py``)
FILE = "__filename"        # pyarrow.dataset's special column: the file a row came from
FOOTER_THREADS = 16        # footers are small reads; on an object store latency, not bandwidth, bounds them


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
    """Complete part files of a table folder, sorted; temporaries are not listed.

    While a compaction swaps a folder's small parts for large ones, its journal says which
    set is the table: once the swap is committed the new parts (moved into place or not
    yet) and never the old ones, before that the old ones. So a reader here sees one
    whole set, never both or neither, whenever it reads.
    """
    info = folder.fs.get_file_info(folder.path)
    if info.type == pafs.FileType.NotFound:
        return []
    listing = folder.fs.get_file_info(pafs.FileSelector(folder.path, recursive=False))
    parts = {f.path for f in listing if f.type == pafs.FileType.File and f.base_name.endswith(PART_SUFFIX)
             and not f.base_name.startswith((TMP_PREFIX, "_"))}
    present = {f.path for f in listing}
    for journal in sorted(f.path for f in listing if f.base_name.startswith(SWAP_PREFIX)):
        swap = read_swap(folder.fs, journal)
        if swap is None or not swap_committed(folder.fs, swap):
            continue
        parts -= {posixpath.join(folder.path, name) for name in swap["old"]}
        for tmp, final in swap["new"]:
            final_path, tmp_path = posixpath.join(folder.path, final), posixpath.join(folder.path, tmp)
            if final_path in present:
                parts.add(final_path)
            elif tmp_path in present:
                parts.add(tmp_path)
    return sorted(parts)


def read_swap(fs: pafs.FileSystem, path: str) -> dict[str, Any] | None:
    """A compaction journal, or None when it vanished (the swap just finished)."""
    try:
        with fs.open_input_stream(path) as stream:
            return json.loads(stream.read().decode())
    except (FileNotFoundError, OSError, ValueError):
        return None


def swap_committed(fs: pafs.FileSystem, swap: dict[str, Any]) -> bool:
    """A swap counts once its commit journal (the stage ledger's, written last) exists."""
    return fs.get_file_info(swap["commit"]).type != pafs.FileType.NotFound


def write_json(fs: pafs.FileSystem, path: str, data: Any) -> None:
    """Write a small JSON file atomically (``write_bytes``)."""
    write_bytes(Location(fs, path), json.dumps(data, indent=2, default=str).encode())


Filter = list[tuple[str, str, Any]]  # pyarrow's conjunction form: [("status", "==", "kept"), ...]


def read_table(folder: Location, kind: str, columns: list[str] | None = None,
               filter: Filter | None = None, validate_parts: bool = True) -> pa.Table:
    """Read the parts of a table folder, each validated against the ``kind`` schema.

    Validation is per part so an error names the offending file. ``columns`` reads only
    those columns and ``filter`` only matching rows (``[(column, op, value), ...]``, all
    must hold): both are pushed down into the Parquet reader, so a column that is not
    asked for (a PNG, an embedding) is never read. Each part's footer is read once (in
    parallel with the others) and checked whole (names and types) before its rows are read.
    """
    return read_files(folder.fs, list_parts(folder), kind, columns, filter, validate_parts)


def read_files(fs: pafs.FileSystem, paths: Iterable[str], kind: str, columns: list[str] | None = None,
               filter: Filter | None = None, validate_parts: bool = True) -> pa.Table:
    """``read_table`` over given part files: one parallel scan, each footer read once.

    The lookups of stage 4 and of the latent cache read only the files a file index
    (``file_index``) names for their ids, with the same checks as a whole-table read.
    """
    schema = schema_for(kind)
    wanted = list(columns or schema.names)
    needed = wanted + [c for c, _, _ in filter or [] if c not in wanted]
    expression = pq.filters_to_expression(filter) if filter else None
    fmt = pads.ParquetFileFormat()

    def read(path: str) -> pa.Table:
        try:
            fragment = fmt.make_fragment(path, filesystem=fs)
            fragment.ensure_complete_metadata()  # the footer: read once, reused by the scan below
            if validate_parts:
                validate(fragment.physical_schema.empty_table(), kind, source=path)
            part = fragment.to_table(schema=fragment.physical_schema, columns=needed, filter=expression)
        except (pa.ArrowInvalid, OSError) as err:
            raise SchemaError(path, None, f"unreadable Parquet file: {err}") from None
        if validate_parts:
            part = validate(part, kind, source=path, columns=needed)
        return part.select(wanted)

    tables = parallel(read, list(dict.fromkeys(paths)))
    if not tables:
        return pa.Table.from_pylist([], schema=pa.schema([schema.field(c) for c in wanted]))
    return pa.concat_tables(tables)


def parallel(fn: Any, items: list[Any]) -> list[Any]:
    """``fn`` over ``items`` in threads (Arrow's readers release the GIL), results in order:
    footers of many parts are read at once (on an object store, latency bounds them)."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(FOOTER_THREADS, len(items)), thread_name_prefix="magref-parts") as pool:
        return list(pool.map(fn, items))


def table_files(loc: Location) -> list[str]:
    """The part files of a table folder, or the one file a path names (a manifest file)."""
    info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.NotFound:
        return []
    return list_parts(loc) if info.type == pafs.FileType.Directory else [loc.path]


def file_index(loc: Location, kind: str, key: str, filter: Filter | None = None) -> pa.Table:
    """``key`` -> the files holding its rows: a table ``(key, files: list<string>)``.

    One scan of the key column (and the filter's) over every part, once per job: a job
    then hands each task the few files its ids live in, so a task opens O(1) files
    instead of every part of the table (which made a job cost tasks x parts).
    """
    paths = table_files(loc)
    columns = [key] + [c for c, _, _ in filter or [] if c != key]
    if not paths:
        return pa.table({key: pa.array([], pa.string()), "files": pa.array([], pa.list_(pa.string()))})
    dataset = pads.dataset(paths, format="parquet", filesystem=loc.fs)
    try:
        found = dataset.to_table(columns=columns + [FILE],
                                 filter=pq.filters_to_expression(filter) if filter else None)
    except (pa.ArrowInvalid, OSError) as err:  # name the file: check each one
        for path in paths:
            read_files(loc.fs, [path], kind, columns)
        raise SchemaError(loc.uri(), key, f"cannot index: {err}") from None
    pairs = found.select([key, FILE]).group_by([key, FILE]).aggregate([])
    grouped = pairs.group_by(key).aggregate([(FILE, "list")])
    return grouped.rename_columns([key, "files"]).cast(pa.schema([(key, pa.string()),
                                                                   ("files", pa.list_(pa.string()))]))


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


def remove_temporaries(folder: Location, prefix: str = "") -> int:
    """Delete parts left half-written by a killed job. Returns how many were removed.

    ``prefix`` limits it to temporaries of parts named so (``part-<stage>-``): the errors
    folder is shared by stages that may run at once, and one must not delete another's
    part while it is being written.
    """
    info = folder.fs.get_file_info(folder.path)
    if info.type == pafs.FileType.NotFound:
        return 0
    stale = [f.path for f in folder.fs.get_file_info(pafs.FileSelector(folder.path))
             if f.base_name.startswith(TMP_PREFIX + prefix) and f.base_name.endswith(".tmp")]
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
    return read_files(loc.fs, [loc.path], kind, columns, filter)

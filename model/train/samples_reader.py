"""The samples table, streamed: an index from footers and id columns, row groups read on demand.

A MAGREF samples table holds PNGs (five references of ~330 KB per sample), so 100k samples
are ~170 GB: no rank may read it whole. ``SamplesTable`` reads, once, each part's footer and
its ``sample_id`` column, and keeps the index as arrays (id, file, row group, row: the id
bytes plus 12 bytes per sample). A row is read with its row group, and at most
``max_row_groups`` row groups are held at once (least recently used out), whatever the
table's size. ``epoch_order`` shuffles by row group (row groups dealt to ranks round-robin,
so each rank reads only its own) and then rows inside a window of a few row groups (a
bounded shuffle buffer, as MosaicML Streaming and WebDataset do): a rank reads each of its
row groups about once per epoch, and the order is a function of (seed, epoch, rank, world)
alone, so a resumed run continues with the very next sample.

Indices are positions in ``sample_id`` order, so index i means the same sample everywhere
(the latent cache relies on it). A part whose schema is wrong is skipped whole, its rows
counted and its file named in ``problems``; the other parts still train.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from model.train.data import BadRecord
from schemas.io import Location, parallel, table_files
from schemas.validate import SchemaError, validate

WINDOW_ROW_GROUPS = 2  # rows are shuffled inside windows of this many consecutive (shuffled) row groups
OPEN_FILES = 8  # parts kept open (footer parsed once) for the row groups that follow


class SamplesTable:
    """A samples table (file or folder, local or pyarrow URI), indexed, read row group by row group."""

    def __init__(self, path: str, window: int = WINDOW_ROW_GROUPS, max_row_groups: int | None = None) -> None:
        self.path, self.window = path, window
        # The loader's threads run ahead into the next window: two windows' row groups.
        self.max_row_groups = max_row_groups or 2 * window
        self.skipped_rows = 0
        self.problems: list[str] = []
        self.row_group_reads = 0  # how many row groups were read (tests and the benchmark count)
        self.most_held = 0        # the most row groups held at once
        loc = Location.of(path)
        self._fs = loc.fs
        files = table_files(loc)
        if not files and not loc.exists():
            raise FileNotFoundError(f"samples table {path!r} does not exist")
        self.files: list[str] = []
        ids, group_of, row_of, sizes = [], [], [], []
        for file, (found, skipped, problem) in zip(files, parallel(self._index_part, files)):
            self.skipped_rows += skipped
            if problem:
                self.problems.append(problem)
            if found is None:
                continue
            for group, column in enumerate(found):
                ids.append(column)
                group_of.append(np.full(len(column), len(sizes), np.int32))
                row_of.append(np.arange(len(column), dtype=np.int32))
                sizes.append((len(self.files), group))
            self.files.append(file)
        self._groups = sizes  # global row group -> (file, row group in file)
        all_ids = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
        order = pc.sort_indices(all_ids).to_numpy() if len(all_ids) else np.zeros(0, np.int64)
        self.sample_ids: pa.Array = all_ids.take(pa.array(order))
        self._group = np.concatenate(group_of)[order] if ids else np.zeros(0, np.int32)
        self._row = np.concatenate(row_of)[order] if ids else np.zeros(0, np.int32)
        self._held: collections.OrderedDict[int, pa.Table] = collections.OrderedDict()
        self._open: collections.OrderedDict[int, pq.ParquetFile] = collections.OrderedDict()
        self.footer_reads = 0  # parts opened for row groups (tests count: once per part while it stays open)
        self._lock = threading.Lock()

    def _index_part(self, file: str) -> tuple[list[pa.Array] | None, int, str | None]:
        """One part's ids per row group (footer and id column only), the rows skipped, and why."""
        try:
            part = pq.ParquetFile(file, filesystem=self._fs)
        except (pa.ArrowInvalid, OSError) as exc:
            return None, 0, f"{file}: unreadable Parquet file: {exc}"
        try:
            validate(part.schema_arrow.empty_table(), "samples", source=file)
            return [part.read_row_group(g, columns=["sample_id"]).column("sample_id").combine_chunks().cast(pa.string())
                    for g in range(part.num_row_groups)], 0, None
        except SchemaError as exc:
            return None, part.metadata.num_rows, str(exc)
        except (pa.ArrowInvalid, OSError) as exc:
            return None, part.metadata.num_rows, f"{file}: unreadable Parquet file: {exc}"

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def row_groups(self) -> int:
        return len(self._groups)

    def sample_id(self, index: int) -> str:
        return self.sample_ids[index].as_py()

    def index_of(self, sample_id: str) -> int:
        """The index of ``sample_id`` (ids are sorted: a binary search, no copy of the ids);
        ``KeyError`` when absent."""
        low, high = 0, len(self)
        while low < high:
            middle = (low + high) // 2
            if self.sample_id(middle) < sample_id:
                low = middle + 1
            else:
                high = middle
        if low >= len(self) or self.sample_id(low) != sample_id:
            raise KeyError(sample_id)
        return low

    def row(self, index: int) -> dict[str, Any]:
        """One row, read with its row group (kept among the last ``max_row_groups`` used)."""
        group = int(self._group[index])
        return self._row_group(group, self.sample_id(index)).slice(int(self._row[index]), 1).to_pylist()[0]

    def _row_group(self, group: int, sample_id: str) -> pa.Table:
        with self._lock:
            if group in self._held:
                self._held.move_to_end(group)
                return self._held[group]
            file, in_file = self._groups[group]
            source = f"{self.files[file]} (row group {in_file})"
            try:
                table = validate(self._part(file).read_row_group(in_file), "samples", source=source)
            except SchemaError as exc:
                raise BadRecord("schema", sample_id, str(exc)) from exc
            except (pa.ArrowInvalid, OSError) as exc:
                raise BadRecord("unreadable_part", sample_id, f"{source}: {exc}") from exc
            while len(self._held) >= self.max_row_groups:
                self._held.popitem(last=False)
            self._held[group] = table
            self.row_group_reads += 1
            self.most_held = max(self.most_held, len(self._held))
            return table

    def _part(self, file: int) -> pq.ParquetFile:
        """Part ``file``, opened once while it is among the last ``OPEN_FILES`` used (caller holds the lock)."""
        if file in self._open:
            self._open.move_to_end(file)
            return self._open[file]
        part = pq.ParquetFile(self.files[file], filesystem=self._fs)
        self.footer_reads += 1
        while len(self._open) >= OPEN_FILES:
            self._open.popitem(last=False)
        self._open[file] = part
        return part

    def epoch_order(self, seed: int, epoch: int, rank: int, world: int) -> np.ndarray | None:
        """Rank ``rank``'s indices for an epoch: its row groups (a seeded permutation dealt
        round-robin), rows shuffled inside windows of ``window`` row groups. ``None`` when there
        are fewer row groups than ranks (the stream then deals rows instead)."""
        if self.row_groups < world:
            return None
        rng = np.random.default_rng([seed, epoch, 0x5EED, 0xB10C])
        mine = rng.permutation(self.row_groups)[rank::world]
        members = np.argsort(self._group, kind="stable")  # indices grouped by row group
        starts = np.searchsorted(self._group[members], np.arange(self.row_groups + 1))
        share = []
        for at in range(0, len(mine), self.window):
            window = np.concatenate([members[starts[g]:starts[g + 1]] for g in mine[at:at + self.window]])
            share.append(rng.permutation(window))
        return np.concatenate(share) if share else np.zeros(0, np.int64)

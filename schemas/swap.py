"""Swapping a folder's parts for others, so a kill at any moment leaves one whole set.

Compaction (``pipelines/compact.py``) replaces many small parts of a stage by a few large
ones in up to three folders (its table, ``errors``, its ledger). The protocol:

1. the new parts are written under hidden temporary names (readers skip them);
2. each folder gets a journal ``_compact-<stage>.json`` naming its old parts and its new
   ones (temporary -> final name); every journal names the *ledger's* journal as its
   commit, and that one is written last: from then on the swap has happened;
3. ``finish_swaps`` moves the new parts into place, deletes the old ones and the
   journals (ledger last). It is idempotent: a rerun after a kill finishes it.

``schemas.io.list_parts`` reads a committed journal and lists the new set (moved or not)
and never the old one, so our readers see the old parts or the new ones, never both or
neither. Readers that list the folder themselves (pandas, DuckDB, Spark) see a folder
mid-step-3 as it is: for the few milliseconds between a folder's moves and its deletes,
old and new parts side by side (rows twice); before step 3 and after it, one set.
"""

from __future__ import annotations

import posixpath
from typing import Iterable

import pyarrow.fs as pafs

from schemas.io import SWAP_PREFIX, Location, read_swap, swap_committed, write_json


def journal(folder: Location, stage: str) -> Location:
    return folder.join(f"{SWAP_PREFIX}{stage}.json")


def write_journals(folders: Iterable[tuple[Location, list[str], list[tuple[str, str]]]], commit: Location,
                   stage: str) -> None:
    """Step 2: one journal per folder ``(folder, old names, [(temporary, final)])``; ``commit``
    (the ledger folder, which must be among them) is written last."""
    items = list(folders)
    ordered = [f for f in items if f[0].path != commit.path] + [f for f in items if f[0].path == commit.path]
    for folder, old, new in ordered:
        write_json(folder.fs, journal(folder, stage).path,
                   {"commit": journal(commit, stage).path, "old": sorted(old), "new": [list(n) for n in new]})


def finish_swaps(folders: Iterable[Location], stage: str) -> int:
    """Step 3 for ``stage`` in ``folders`` (the ledger folder last): roll a committed swap
    forward, drop an uncommitted one's journal (its temporaries are left to
    ``remove_temporaries``). Returns how many folders it finished."""
    finished = 0
    for folder in folders:
        path = journal(folder, stage)
        swap = read_swap(folder.fs, path.path)
        if swap is None:
            continue
        if swap_committed(folder.fs, swap):
            for tmp, final in swap["new"]:
                source = posixpath.join(folder.path, tmp)
                if folder.fs.get_file_info(source).type != pafs.FileType.NotFound:
                    folder.fs.move(source, posixpath.join(folder.path, final))
            for name in swap["old"]:
                try:
                    folder.fs.delete_file(posixpath.join(folder.path, name))
                except (FileNotFoundError, OSError):  # deleted before a kill
                    pass
            finished += 1
        folder.fs.delete_file(path.path)
    return finished

"""Where stage 4's rows live: file indexes built once per job, so a task opens O(1) files.

Stage 4 and the samples assembly need, per clip, rows of ``faces``, ``objects`` and
``pairs`` (and the faces of its identities' cross-clip partners). Before, every task read
every part of those tables with an ``in`` filter, so a job cost tasks x parts: quadratic
in the run. Now the driver scans each table's *key column* once per job
(``schemas.io.file_index``: footers and one small column, no images) and puts on each clip
row the files that hold its rows; a task then opens only those files, typically one per
table. Why this and not Ray's ``Dataset.join`` / ``groupby().map_groups``: a hash shuffle
would move every face crop, mask and variant PNG through the object store (and spill it)
to bring rows to the clip a task already knows the location of; the files are already
clustered by clip (a stage commits a block of clips per part, and compaction sorts by
id), so a lookup costs one open per table and the job stays streaming, with nothing held
on the driver but ids and file names.

Cross-clip partners (``curation.pairs.cross_clip.best_partners``) are chosen on the
driver from the ``cross_pairs`` ids (no images), once per job, and travel on the clip
row with the files where the partners' faces live.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from curation.envelope import put_column
from curation.pairs.cross_clip import best_partners
from pipelines.ledger import RunDir
from schemas.io import file_index, read_files
from schemas.tables import KEPT

FILES = {kind: f"_{kind}_files" for kind in ("faces", "objects", "pairs")}  # private columns
PARTNERS = "_partners"            # JSON {identity: [partner identity, partner's clip, similarity]}
PARTNER_FILES = "_partner_files"  # faces files of the partners' clips
PARTNER_OBJECT_FILES = "_partner_object_files"  # objects files of the partners' clips (imported object pairs)
CROSS_COLUMNS = ["pair_id", "identity_a", "clip_a", "identity_b", "clip_b", "similarity", "status"]
FILES_TYPE = pa.list_(pa.string())


def files_for(keys: pa.Array, index: pa.Table, key: str) -> pa.Array:
    """For each key, the files ``index`` (``schemas.io.file_index``) lists for it (null: none)."""
    where = pc.index_in(keys, value_set=index.column(key).combine_chunks())
    return index.column("files").combine_chunks().take(where).cast(FILES_TYPE)


def attach_files(run: RunDir, clips: pa.Table, kinds: Iterable[str], key: str = "clip_id") -> pa.Table:
    """``clips`` with, per kind, the column of files holding each clip's rows of that table."""
    for kind in kinds:
        index = file_index(run.table(kind), kind, key)
        clips = put_column(clips, FILES[kind], files_for(clips.column(key).combine_chunks(), index, key))
    return clips


def _identities_by_clip(run: RunDir, ids: pa.Array) -> dict[str, list[str]]:
    """Each clip's identities that can have cross-clip partners: its faces' identities and
    its kept objects (imported datasets pair objects across videos; the object id is the
    identity). Only id columns are read."""
    mine: dict[str, list[str]] = {}
    for kind, column, keep in (("faces", "identity_id", None), ("objects", "object_id", KEPT)):
        if not run.has(kind):
            continue
        rows = run.read(kind, ["clip_id", column] + (["status"] if keep else []))
        where = pc.and_(pc.is_in(rows.column("clip_id"), value_set=ids), pc.is_valid(rows.column(column)))
        if keep:
            where = pc.and_(where, pc.equal(rows.column("status"), keep))
        for row in rows.filter(where).group_by(["clip_id", column]).aggregate([]).to_pylist():
            mine.setdefault(row["clip_id"], []).append(row[column])
    return mine


def _files_of_clips(run: RunDir, kind: str, clip_lists: list[list[str]]) -> pa.Array:
    """Per entry of ``clip_lists``, the files of ``kind`` holding those clips' rows."""
    index = file_index(run.table(kind), kind, "clip_id")
    flat = files_for(pa.array([c for cs in clip_lists for c in cs], pa.string()), index, "clip_id").to_pylist()
    files, at = [], 0
    for cs in clip_lists:
        files.append(sorted({f for found in flat[at:at + len(cs)] for f in found or []}))
        at += len(cs)
    return pa.array(files, FILES_TYPE)


def attach_partners(run: RunDir, clips: pa.Table) -> pa.Table:
    """``clips`` with each clip's identities' best cross-clip partners and where their rows are."""
    ids = clips.column("clip_id").combine_chunks()
    partners: dict[str, tuple[str, str, float]] = {}
    mine = _identities_by_clip(run, ids)
    if run.has("cross_pairs"):
        identities = pa.array(sorted({i for found in mine.values() for i in found}), pa.string())
        cross = run.read("cross_pairs", CROSS_COLUMNS)
        cross = cross.filter(pc.or_(pc.is_in(cross.column("identity_a"), value_set=identities),
                                    pc.is_in(cross.column("identity_b"), value_set=identities)))
        partners = best_partners(cross.to_pylist())
    chosen = [{i: partners[i] for i in sorted(mine.get(c, [])) if i in partners} for c in ids.to_pylist()]
    clips = put_column(clips, PARTNERS, pa.array([json.dumps(c) if c else None for c in chosen], pa.string()))
    partner_clips = [sorted({p[1] for p in c.values()}) for c in chosen]
    for kind, column in (("faces", PARTNER_FILES), ("objects", PARTNER_OBJECT_FILES)):
        clips = put_column(clips, column, _files_of_clips(run, kind, partner_clips))
    return clips


def partners_of(clips: list[dict]) -> dict[str, tuple[str, str, float]]:
    """The partners a batch's clip rows carry (``attach_partners``)."""
    found: dict[str, tuple[str, str, float]] = {}
    for clip in clips:
        for identity, (partner, clip_id, similarity) in json.loads(clip.get(PARTNERS) or "{}").items():
            found[identity] = (partner, clip_id, float(similarity))
    return found


def rows_in(run: RunDir, clips: list[dict], files_column: str, kind: str, columns: list[str], column: str,
            ids: list[str], **equal: Any) -> list[dict]:
    """Rows of ``kind`` whose ``column`` is in ``ids``, read from the files the clip rows name."""
    files = sorted({f for clip in clips for f in clip.get(files_column) or []})
    if not ids or not files:
        return []
    where = [(column, "in", ids)] + [(name, "==", value) for name, value in equal.items()]
    return read_files(run.root.fs, files, kind, columns, where).to_pylist()

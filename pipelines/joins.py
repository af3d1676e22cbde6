"""Stage 4's joins: the rows other stages wrote for a batch of clips, read where the work runs.

Stage 4 and the samples assembly need, per clip, its faces (stage 3), its objects (stage
2), its variants and background (stage 4) and its identities' cross-clip partners. The
driver hands out clip rows that carry the files their rows live in
(``pipelines/lookup.py``, one index scan per table per job); each task opens only those
files, with the clip ids pushed down into the Parquet reader, so images never pass
through the driver and a task's cost does not grow with the run. ``curation/pairs`` then works on plain rows and
knows nothing about tables.

``ready`` decides which clips a stage may take now: those that every stage it builds on
has finished. A clip one of them failed on becomes this stage's error row naming that
failure (a sample without its faces would be silently incomplete).
"""

from __future__ import annotations

import json
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from curation.envelope import per_input, put_column, to_table
from curation.pairs.assemble import AssembleConfig, assemble_sample, best_face_per_identity
from curation.pairs.requests import requests_for_clip
from pipelines.ledger import RunDir
from pipelines.lookup import (
    FILES,
    PARTNER_FILES,
    PARTNER_OBJECT_FILES,
    attach_files,
    attach_partners,
    partners_of,
    rows_in,
)
from schemas.tables import INPUT, KEPT, SAMPLES

UPSTREAM_ERROR = "_upstream_error"  # private column: why a stage this one builds on failed on the clip
FACE_COLUMNS = ["face_id", "clip_id", "identity_id", "segment", "frame", "box", "det_score", "rank", "selected", "crop", "status",
                "score"]  # score: stage 3's ranking score (faces v2)
OBJECT_COLUMNS = ["object_id", "clip_id", "label", "frame", "box", "score", "mask", "ref", "status"]
PAIR_COLUMNS = ["pair_id", "clip_id", "kind", "source_id", "image", "status", "model", "seed", "prompt", "frame"]


class UpstreamError(RuntimeError):
    """A stage this one builds on failed on the clip."""


def ready(run: RunDir, clips: pa.Table, after: Iterable[str]) -> tuple[pa.Table, dict[str, int]]:
    """Clips every stage in ``after`` has finished, with ``UPSTREAM_ERROR`` set where one failed.

    Returns the clips and, per stage, how many clips still wait for it.
    """
    errors: dict[str, str] = {}
    keep = pa.array([True] * clips.num_rows)
    waiting: dict[str, int] = {}
    for stage in after:
        ledger = run.read_ledger(stage).select(["input", "error_type"]).to_pylist()
        done = {row["input"] for row in ledger}
        for row in ledger:
            if row["error_type"]:
                errors.setdefault(row["input"], f"stage {stage} failed on this clip ({row['error_type']}); "
                                                f"see its row in the errors table")
        finished = pc.is_in(clips.column("clip_id"), value_set=pa.array(sorted(done), pa.string()))
        waiting[stage] = clips.num_rows - (pc.sum(finished).as_py() or 0)
        keep = pc.and_(keep, finished)
    clips = clips.filter(keep)
    column = pa.array([errors.get(c) for c in clips.column("clip_id").to_pylist()], pa.string())
    return put_column(clips, UPSTREAM_ERROR, column), waiting


def wait_for_identities(run: RunDir, clips: pa.Table) -> tuple[pa.Table, int]:
    """Clips whose every identity (with a selected face) the cross-clip step has paired, and
    how many clips still wait: a sample assembled earlier would miss its partners for good."""
    if not clips.num_rows or not run.has("faces"):
        return clips, 0
    faces = run.read("faces", ["clip_id", "identity_id"], [("selected", "==", True)]).to_pylist()
    paired = set(run.read_ledger("cross_clip").column("input").to_pylist())
    late = {f["clip_id"] for f in faces if f["identity_id"] is not None and f["identity_id"] not in paired}
    keep = pc.invert(pc.is_in(clips.column("clip_id"), value_set=pa.array(sorted(late), pa.string())))
    kept = clips.filter(keep)
    return kept, clips.num_rows - kept.num_rows


def _by_clip(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["clip_id"], []).append(row)
    return grouped


def _check_upstream(row: dict) -> None:
    if row.get(UPSTREAM_ERROR):
        raise UpstreamError(row[UPSTREAM_ERROR])


class ClipReferences:
    """Stage 4, first step (CPU tasks): each clip's faces and objects -> rows for the editor and inpainter."""

    def __init__(self, run_uri: str | RunDir, scope: str = "used", variants: bool = True, background: bool = True):
        self.run, self.scope, self.variants, self.background = RunDir.of(run_uri), scope, variants, background

    @staticmethod
    def lookups(run: RunDir, clips: pa.Table) -> pa.Table:
        """Driver side, once per job: the files each clip's rows live in."""
        return attach_files(run, clips, ("faces", "objects"))

    def __call__(self, batch: pa.Table) -> pa.Table:
        clips = batch.to_pylist()
        ids = [c["clip_id"] for c in clips]
        faces = _by_clip(rows_in(self.run, clips, FILES["faces"], "faces", FACE_COLUMNS, "clip_id", ids))
        objects = _by_clip(rows_in(self.run, clips, FILES["objects"], "objects", OBJECT_COLUMNS, "clip_id", ids))

        def requests(clip: dict) -> list[dict]:
            _check_upstream(clip)
            return requests_for_clip(clip, faces.get(clip["clip_id"], []), objects.get(clip["clip_id"], []),
                                     scope=self.scope, variants=self.variants, background=self.background)

        return to_table(per_input(clips, INPUT, requests))


class ClipSamples:
    """The samples assembly (CPU tasks): each clip's rows from stages 1-4 -> its Eq. 19 record."""

    def __init__(self, run_uri: str | RunDir, config: AssembleConfig):
        self.run, self.config = RunDir.of(run_uri), config

    @staticmethod
    def lookups(run: RunDir, clips: pa.Table, cross_clip: bool = True) -> pa.Table:
        """Driver side, once per job: the files each clip's rows live in, and its partners."""
        clips = attach_files(run, clips, ("faces", "objects", "pairs"))
        return attach_partners(run, clips) if cross_clip else clips

    def __call__(self, batch: pa.Table) -> pa.Table:
        clips = batch.to_pylist()
        ids = [c["clip_id"] for c in clips]
        faces = _by_clip(rows_in(self.run, clips, FILES["faces"], "faces", FACE_COLUMNS, "clip_id", ids))
        objects = _by_clip(rows_in(self.run, clips, FILES["objects"], "objects", OBJECT_COLUMNS, "clip_id", ids))
        pairs = _by_clip(rows_in(self.run, clips, FILES["pairs"], "pairs", PAIR_COLUMNS, "clip_id", ids))
        partners, partner_faces = self._partners(clips)

        def sample(clip: dict) -> list[dict]:
            _check_upstream(clip)
            row = assemble_sample(clip, faces.get(clip["clip_id"], []), objects.get(clip["clip_id"], []),
                                  pairs.get(clip["clip_id"], []), partner_faces, self.config, partners)
            return [] if row is None else [{**row, "status": "kept"}]

        return to_table(per_input(clips, INPUT, sample), SAMPLES)

    def _partners(self, clips: list[dict]) -> tuple[dict, dict]:
        """Each identity's best cross-clip partner (chosen on the driver), and the partners'
        reference faces (or, for imported object pairs, cut-outs), read from the partners'
        clips' files only."""
        if not self.config.cross_clip_variants:
            return {}, {}
        partners = partners_of(clips)
        wanted = sorted({p[0] for p in partners.values()})
        faces_of_partners = rows_in(self.run, clips, PARTNER_FILES, "faces", FACE_COLUMNS, "identity_id", wanted,
                                    selected=True)
        found = best_face_per_identity(faces_of_partners)
        # Imported datasets pair objects (the identity is the object id): the partner's cut-out.
        for row in rows_in(self.run, clips, PARTNER_OBJECT_FILES, "objects", OBJECT_COLUMNS, "object_id", wanted,
                           status=KEPT):
            found[row["object_id"]] = row
        return partners, found


def summary_line(waiting: dict[str, int]) -> str | None:
    """A note for the report when clips wait for earlier stages."""
    late = {stage: count for stage, count in waiting.items() if count}
    return None if not late else "waiting for earlier stages: " + json.dumps(late)

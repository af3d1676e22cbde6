"""Stage 3, operator 3: ``FaceReferences`` (CPU tasks, whole clips), and what it does to one
clip: its faces -> its identities and reference set (Appendix B.3, Eq. 17).

Input: every face ``measure.measure_faces`` found on the clip's frames and on its
neighbouring segments, each with its filter status. Output: the same faces with

* ``face_id``: the clip id + an index in (time, segment, x, y) order, so a rerun gives
  the same ids;
* ``identity_id``: ``identities.assign_identities`` (founded by the clip's own usable
  faces; neighbours and filtered faces may only join);
* ``status``: the filter status, or ``not_in_clip`` for a usable neighbour face that
  joined no identity of the clip;
* ``rank``: 0 = best ranking score among the identity's usable faces (null otherwise);
* ``selected``: the identity's references, spread over its yaw range
  (``select.spread_over_yaw``), ``select.per_identity`` at most;
* ``crop``: kept for selected faces only unless ``faces.crops = all`` (a clip sampled
  every half second yields dozens of crops per person; the references are what later
  stages read).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.envelope import run_isolated, to_table
from curation.faces import FacesConfig
from curation.faces.identities import NO_IDENTITY, assign_identities
from curation.faces.measure import CLIP, SEGMENTS
from curation.faces.quality import KEPT
from curation.faces.select import ranks, spread_over_yaw
from schemas.ids import child_id, face_id
from schemas.tables import FACES, INPUT

NOT_IN_CLIP = "not_in_clip"
FILTER = "_filter"  # the detection step's verdict, settled by FaceReferences


def identity_id(clip_id: str, number: int) -> str:
    """The id of identity ``number`` of a clip (numbered per clip, most faces first)."""
    return child_id(clip_id, "p", number)


def _order(row: dict[str, Any]) -> tuple:
    box = row.get("box") or (0.0, 0.0, 0.0, 0.0)
    return (float(row["time_s"]), SEGMENTS.index(row["segment"]), float(box[0]), float(box[1]), -float(row["det_score"]))


def clip_references(clip_id: str, faces: Sequence[dict[str, Any]], config: FacesConfig) -> list[dict[str, Any]]:
    """The faces of one clip with ids, identities, ranks and the selection set."""
    rows = [dict(face) for face in sorted(faces, key=_order)]
    if not rows:
        return []
    for index, row in enumerate(rows):
        row["face_id"] = face_id(clip_id, index)
        row["clip_id"] = clip_id
    usable = np.array([row["status"] == KEPT for row in rows])
    in_clip = np.array([row["segment"] == CLIP for row in rows])
    labels = assign_identities(np.array([row["embedding"] for row in rows], np.float32),
                               founders=usable & in_clip, min_similarity=config.backend_config.min_similarity)
    for row, label, ok in zip(rows, labels, usable):
        row["identity_id"] = identity_id(clip_id, int(label)) if label != NO_IDENTITY else None
        if ok and label == NO_IDENTITY:
            row["status"] = NOT_IN_CLIP
        row["rank"], row["selected"] = None, False
    for label in sorted(set(int(k) for k in labels) - {NO_IDENTITY}):
        members = np.flatnonzero((labels == label) & usable)
        scores = np.array([rows[i]["score"] for i in members], np.float64)
        for i, rank in zip(members, ranks(scores)):
            rows[i]["rank"] = int(rank)
        candidates = members if config.select.from_neighbours else members[in_clip[members]]
        if len(candidates):
            yaw = np.array([rows[i]["yaw"] for i in candidates], np.float64)
            chosen = spread_over_yaw(yaw, np.array([rows[i]["score"] for i in candidates]), config.select.per_identity)
            for i in candidates[chosen]:
                rows[i]["selected"] = True
    if config.crops == "selected":
        for row in rows:
            if not row["selected"]:
                row["crop"] = None
    return rows


class FaceReferences:
    """CPU step over whole clips: identities, statuses, ranks and the selected references."""

    whole_inputs = True

    def __init__(self, config: FacesConfig):
        self.config = config

    def __call__(self, batch: pa.Table) -> pa.Table:
        return run_isolated(batch, self._choose, FACES)

    def _choose(self, live: pa.Table) -> pa.Table:
        rows: list[dict[str, Any]] = []
        for input_id in pc.unique(live.column(INPUT)).to_pylist():
            faces = live.filter(pc.equal(live.column(INPUT), input_id)).to_pylist()
            for face in faces:
                face["status"] = face.pop(FILTER)
            for face in clip_references(faces[0]["clip_id"], faces, self.config):
                face[INPUT] = input_id
                rows.append(face)
        return to_table(rows, FACES)

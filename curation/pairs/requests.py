"""What stage 4 makes for one clip: the rows its editor and inpainter steps fill.

One row per reference that gets a variant (``kind`` "face" / "object") and one
background row, all carrying the clip's id as their input. Which references get a
variant is ``scope``: ``"used"`` (default) the ones the sample will use
(``assemble.choose_references``: the GPU never edits a reference the canvas limit would
drop), ``"all"`` every kept object and every selected face, as B.4 words it.
A clip with no reference at all yields no row (the sample needs one).
"""

from __future__ import annotations

from typing import Any, Sequence

from curation.pairs.assemble import choose_references
from curation.pairs.backgrounds import SUBJECTS
from curation.pairs.variants import BACKGROUND, FACE, OBJECT, REF
from schemas.ids import background_id, variant_id
from schemas.tables import FACE_SEGMENTS, INPUT, KEPT

IN_CLIP = FACE_SEGMENTS[1]  # a face seen in the clip itself, not in a neighbouring segment
CLIP_COLUMNS = ("uri", "start_frame", "end_frame", "start_s", "end_s", "fps", "width", "height")


def requests_for_clip(clip: dict, faces: Sequence[dict], objects: Sequence[dict], *, scope: str = "used",
                      variants: bool = True, background: bool = True) -> list[dict[str, Any]]:
    """The stage-4 rows of one clip (faces/objects: rows of those tables for this clip)."""
    if scope not in ("used", "all"):
        raise ValueError(f"variants scope must be 'used' or 'all', got {scope!r}")
    used_faces, used_objects, _ = choose_references(faces, objects)
    if not used_faces and not used_objects:
        return []
    if scope == "all":
        used_faces = [f for f in faces if f.get("selected") and f.get("identity_id") is not None]
        used_objects = [o for o in objects if o.get("status") == KEPT]
    base = {"clip_id": clip["clip_id"], INPUT: clip["clip_id"], "status": KEPT}
    rows: list[dict[str, Any]] = []
    if variants:
        rows += [{**base, "pair_id": variant_id(f["face_id"]), "kind": FACE, "source_id": f["face_id"],
                  "label": None, REF: f["crop"]} for f in sorted(used_faces, key=lambda f: f["face_id"])]
        rows += [{**base, "pair_id": variant_id(o["object_id"]), "kind": OBJECT, "source_id": o["object_id"],
                  "label": o.get("label"), REF: o["ref"]} for o in sorted(used_objects, key=lambda o: o["object_id"])]
    if background:
        subjects = [{"kind": "object", "frame": o.get("frame"), "box": o.get("box"), "mask": o.get("mask")}
                    for o in objects]
        # Only faces seen in the clip itself: a neighbour segment's face was on another
        # frame (its number is only approximate on VFR video and may fall inside the clip).
        subjects += [{"kind": "face", "frame": f.get("frame"), "box": f.get("box"), "mask": None}
                     for f in faces if f.get("segment", IN_CLIP) == IN_CLIP]
        rows.append({**base, "pair_id": background_id(clip["clip_id"]), "kind": BACKGROUND,
                     "source_id": clip["clip_id"], "label": None, REF: None, SUBJECTS: subjects,
                     **{c: clip.get(c) for c in CLIP_COLUMNS}})
    return rows

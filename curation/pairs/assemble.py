"""The training record of Eq. 19, one per kept clip with at least one reference.

    R_i = {V_i, C_i, (I_Face, I_Face'), (I_Obj_1, I_Obj_1'), ..., (I_Obj_k, I_Obj_k'), I_Bg}

Everything here is a pure function of the rows of one clip (and, for cross-clip variants,
of the partner identities' faces), so assembling twice gives the same record, bit for
bit. What it decides:

* **Which references** (``choose_references``): one face per identity (its best-ranked
  selected face, with the identity's other selected faces as ranked ``crops``, at most
  10 in all, so training sees every pose stage 3 selected) and every kept object, ordered by score; at most ``MAX_REFERENCES - 1``
  of them, because the background takes the canvas's last cell (MAGREF's canvas holds 8).
  Stage 4 calls the same function, so variants are generated only for references a sample
  will use. The ones left out are listed in the provenance with the reason.
* **Which word** each reference answers to (the word subject disentanglement looks up,
  Eq. 6): an object's label as the caption spells it ("dog" -> "dogs" if the caption says
  so); a face takes the label of the person object whose box holds it, else the first
  person word of the caption no other face took. A label the caption does not contain
  gives no word (the reference still counts; it just grounds no word).
* **Which variant**: a face whose identity has a cross-clip partner takes the partner's
  best face (``variant_source = "cross_clip"``) when ``cross_clip_variants`` is on; every
  other reference takes its generated variant (``"generated"``). Each of a face's
  ``crops`` carries its own generated variant where stage 4 made one (``scope=all``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

from curation.operator import TaskPool, setting
from curation.words import noun_forms
from schemas.ids import sample_id, video_of
from schemas.samples import MAX_REFERENCES
from schemas.tables import KEPT, MAX_FACE_CROPS

PERSON_WORDS = ("person", "man", "woman", "boy", "girl", "child", "kid", "baby", "lady", "guy", "gentleman",
                "teenager", "player", "astronaut", "worker", "dancer", "singer", "doctor", "student", "people")
_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")


@dataclass
class AssembleConfig:
    cross_clip_variants: bool = setting(True, help=
        "a face with a cross-clip partner takes the partner's face as its variant")
    person_words: list[str] = setting(factory=lambda: list(PERSON_WORDS), help="words a face may answer to")
    pool: TaskPool = setting(factory=lambda: TaskPool(batch_size=16, num_cpus=0.5), help="clips per task")


def face_score(face: dict) -> float:
    """Stage 3's ranking score (confidence x frontalness) when it has one, else the detection score."""
    score = face.get("score")
    return float(score if score is not None else face.get("det_score") or 0.0)


def _rank_key(face: dict) -> tuple:
    """Best first: stage 3's rank, then score, then id (a total order: assembly is repeatable)."""
    return (face.get("rank") if face.get("rank") is not None else 1 << 30, -face_score(face), face["face_id"])


def ranked_faces_per_identity(faces: Sequence[dict], limit: int = MAX_FACE_CROPS) -> dict[str, list[dict]]:
    """{identity: its selected faces, best first, at most ``limit``}: stage 3's poses (B.3)."""
    ranked: dict[str, list[dict]] = {}
    for face in faces:
        if face.get("selected") and face.get("identity_id") is not None:
            ranked.setdefault(face["identity_id"], []).append(face)
    return {identity: sorted(rows, key=_rank_key)[:limit] for identity, rows in sorted(ranked.items())}


def best_face_per_identity(faces: Sequence[dict]) -> dict[str, dict]:
    """{identity: its reference face}: the best-ranked of its selected faces."""
    return {identity: rows[0] for identity, rows in ranked_faces_per_identity(faces, 1).items()}


def choose_references(faces: Sequence[dict], objects: Sequence[dict], max_references: int = MAX_REFERENCES
                      ) -> tuple[list[dict], list[dict], list[dict]]:
    """(faces, objects, dropped): the references a sample uses, by score, within the canvas.

    ``faces`` are rows of the faces table, ``objects`` rows of the objects table (only
    ``kept`` ones count). One cell is kept for the background.
    """
    candidates = [("face", face_score(face), face["face_id"], face)
                  for face in best_face_per_identity(faces).values()]
    candidates += [("object", obj.get("score"), obj["object_id"], obj) for obj in objects if obj.get("status") == KEPT]
    candidates.sort(key=lambda c: (-(c[1] if c[1] is not None else 0.0), c[2]))
    budget = max_references - 1
    chosen, dropped = candidates[:budget], candidates[budget:]
    return ([c[3] for c in chosen if c[0] == "face"], [c[3] for c in chosen if c[0] == "object"],
            [{"id": c[2], "kind": c[0], "score": c[1], "reason": "canvas_limit"} for c in dropped])


def caption_word(caption: str | None, label: str | None) -> str | None:
    """``label`` as the caption spells it (case kept; plurals, irregular ones too, found), or None.

    "woman" finds "women", "person" finds "people", "child" finds "children" (``curation.words``).
    """
    if not caption or not label:
        return None
    words = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(caption.lower())]
    for form in (f.split() for f in noun_forms(label)):
        for i in range(len(words) - len(form) + 1):
            if [w[0] for w in words[i:i + len(form)]] == form:
                return caption[words[i][1]:words[i + len(form) - 1][2]]
    return None


def _contains(box: Sequence[float] | None, point: tuple[float, float]) -> bool:
    if box is None:
        return False
    x, y, w, h = box
    return x <= point[0] <= x + w and y <= point[1] <= y + h


def face_word(face: dict, objects: Sequence[dict], caption: str, person_words: Sequence[str], taken: set[str]) -> str | None:
    """The caption's word for a face: its person object's label, else an untaken person word."""
    box = face.get("box")
    if box is not None:
        centre = (box[0] + box[2] / 2, box[1] + box[3] / 2)
        holders = [o for o in objects if _contains(o.get("box"), centre)]
        # Same frame first, then the tightest box: the person the face belongs to.
        holders.sort(key=lambda o: (o.get("frame") != face.get("frame"), o["box"][2] * o["box"][3], o["object_id"]))
        for holder in holders:
            word = caption_word(caption, holder.get("label"))
            if word and holder.get("label", "").lower() in person_words:
                return word
    for person in person_words:
        word = caption_word(caption, person)
        if word and word.lower() not in taken:
            return word
    return None


def assemble_sample(clip: dict, faces: Sequence[dict], objects: Sequence[dict], pairs: Sequence[dict],
                    partner_faces: dict[str, dict], config: AssembleConfig,
                    partners: dict[str, tuple[str, str, float]] | None = None) -> dict | None:
    """The ``samples`` row of one clip, or None when it has no face or object reference.

    ``pairs`` are the clip's rows of the ``pairs`` table; ``partners`` maps an identity to
    its cross-clip partner (``cross_clip.best_partners``) and ``partner_faces`` a partner
    identity to its reference face row. Imported datasets pair objects across clips
    (OpenS2V's cross-video pairs): there the identity is the object id and the partner's
    row an ``objects`` row, whose cut-out becomes the variant.
    """
    caption = clip.get("caption")
    chosen_faces, chosen_objects, dropped = choose_references(faces, objects)
    if not chosen_faces and not chosen_objects:
        return None
    if not caption:
        raise ValueError(f"clip {clip['clip_id']} has references but no caption (was stage 1 run with captions off?)")
    generated = {p["source_id"]: p for p in pairs if p["kind"] in ("face", "object") and p.get("status") == KEPT and p.get("image")}
    background = next((p for p in pairs if p["kind"] == "background"), None)
    partners = partners or {}
    variants: dict[str, dict] = {}

    def variant_of(source_id: str, identity: str | None) -> dict:
        partner = partners.get(identity) if identity and config.cross_clip_variants else None
        other = partner_faces.get(partner[0]) if partner else None
        image = other and (other.get("crop") or other.get("ref"))  # a partner face, or an imported object
        if image:
            other_id = other.get("face_id") or other["object_id"]
            info = {"variant": image, "variant_source": "cross_clip", "variant_id": other_id}
            variants[source_id] = {"variant_id": other_id, "source": "cross_clip", "identity": partner[0],
                                   "clip_id": partner[1], "similarity": partner[2]}
            return info
        row = generated.get(source_id)
        if row is None:
            variants[source_id] = {"variant_id": None, "source": None}
            return {"variant": None, "variant_source": None, "variant_id": None}
        variants[source_id] = {"variant_id": row["pair_id"], "source": "generated", "model": row.get("model"),
                               "seed": row.get("seed"), "prompt": row.get("prompt")}
        return {"variant": row["image"], "variant_source": "generated", "variant_id": row["pair_id"]}

    ranked = ranked_faces_per_identity(faces)

    def crops_of(face: dict) -> list[dict]:
        """The identity's other selected faces with their own generated variants, if any."""
        crops = []
        for other in ranked.get(face["identity_id"], []):
            if other["face_id"] == face["face_id"] or not other.get("crop"):
                continue
            own = generated.get(other["face_id"])
            crops.append({"face_id": other["face_id"], "rank": other.get("rank"), "ref": other["crop"],
                          "variant": own["image"] if own else None, "variant_id": own["pair_id"] if own else None})
        return crops[:MAX_FACE_CROPS - 1]

    taken: set[str] = set()
    face_items = []
    for face in chosen_faces:
        word = face_word(face, objects, caption, config.person_words, taken)
        if word:
            taken.add(word.lower())
        face_items.append({"identity_id": face["identity_id"], "label": word, "ref": face["crop"],
                           "source_id": face["face_id"], "score": face_score(face),
                           **variant_of(face["face_id"], face["identity_id"]), "crops": crops_of(face)})
    object_items = [{"label": caption_word(caption, obj["label"]), "ref": obj["ref"], "source_id": obj["object_id"],
                     "score": obj.get("score"), **variant_of(obj["object_id"], obj["object_id"])}
                    for obj in chosen_objects]  # an object is its own identity in cross pairs (imported datasets)
    words = list(dict.fromkeys(item["label"] for item in face_items + object_items if item["label"]))
    has_background = background is not None and background.get("status") == KEPT and background.get("image")
    provenance = {
        "clip_id": clip["clip_id"], "video_id": video_of(clip["clip_id"]),
        "faces": [f["face_id"] for f in chosen_faces], "objects": [o["object_id"] for o in chosen_objects],
        "variants": variants, "dropped": dropped,
        "background": None if background is None else {
            "id": background["pair_id"], "status": background.get("status"), "frame": background.get("frame"),
            "model": background.get("model"), "seed": background.get("seed")},
    }
    return {
        "sample_id": sample_id(clip["clip_id"]), "clip_id": clip["clip_id"], "uri": clip["uri"],
        "start_frame": clip["start_frame"], "end_frame": clip["end_frame"], "start_s": clip.get("start_s"),
        "end_s": clip.get("end_s"), "fps": clip.get("fps"), "caption": caption, "subject_words": words,
        "faces": face_items, "objects": object_items,
        "background": background["image"] if has_background else None,
        "background_id": background["pair_id"] if has_background else None,
        "provenance": json.dumps(provenance, sort_keys=True, default=_plain),
        "crop": clip.get("crop"),
    }


def _plain(value: Any) -> Any:
    """numpy scalars in provenance become plain numbers."""
    return value.item() if hasattr(value, "item") else str(value)

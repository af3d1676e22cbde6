"""One OpenS2V-5M key -> our rows: the video, the clip, object cut-outs, views and background.

What maps onto what (MAGREF Eq. 19):

* the key's video and ``face_cut`` -> a ``videos`` row (our probe) and a ``clips`` row whose
  ``crop`` is the watermark crop, so training sees the frame OpenS2V annotated;
* each mask of ``ann_frame_idx`` -> an ``objects`` row: the RGBA tight cut-out of the
  cropped frame with the mask as alpha (the reference I^Obj), the mask itself padded back
  into the source frame, the box in source pixels. OpenS2V labels one subject several
  times (person, individual, woman): masks that overlap by ``duplicate_iou`` are one
  subject, and the label with the best ``gme_score`` (text-image match) keeps it;
  the others are ``duplicate`` rows. Masks of background words are ``background_word``;
* a generated view ``<views>/<key>/<idx>_<class>.png`` -> a ``pairs`` row (the variant I'
  of that object); ``<backgrounds>/<key>.png`` -> the clip's background pair (I^Bg).

Person masks stay ``objects`` (mask-only cut-outs): faces (with embeddings, identities and
cross pairs) come from stage 3's InsightFace pass over the boxes of the objects whose label is
one of ``person_labels``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from curation.envelope import error_row
from curation.faces import PERSON_LABELS
from curation.frames import at_frames, read_clip_frames
from curation.images import decode_png, encode_mask, encode_png, rgba_cutout
from curation.objects.filters import mask_iou
from curation.opens2v.layout import Entry, LayoutError, decode_rle, pair_key, read_entry
from curation.opens2v.scan import read_span
from curation.operator import TaskPool, setting
from curation.video import probe_video
from schemas.ids import background_id, clip_id, cross_pair_id, object_id, variant_id
from schemas.tables import INPUT, KEPT

MODEL = "opens2v-5m"  # the ``model`` of imported pairs rows: OpenS2V made them (GPT-Image views, their inpainter)


@dataclass
class OpenS2VConfig:
    """Import filters. The defaults keep what OpenS2V-5M published (its own pipeline already
    filtered it); raise them to be stricter. Scores are OpenS2V's own: ``aes_score`` (an
    aesthetic predictor on the cut-out, ~3-5 in their data), ``gme_score`` (GME text-image
    similarity of cut-out and class name, ~0.25-0.5), clip ``aesthetic`` / ``motion`` / ``tech``."""

    min_mask_area: float = setting(0.0, help="smallest mask as a fraction of the cropped frame (our stage 2 uses 0.01)")
    min_gme_score: float = setting(0.0, help="per annotation")
    min_aes_score: float = setting(0.0, help="per annotation")
    min_aesthetic: float = setting(0.0, help="the clip's metadata.aesthetic")
    min_motion: float = setting(0.0, help="the clip's metadata.motion")
    min_tech: float = setting(float("-inf"), help="the clip's metadata.tech (DOVER technical score; may be negative)")
    duplicate_iou: float = setting(0.8, help="masks of different labels overlapping this much are one subject")
    drop_background_words: bool = setting(True, help="masks whose class is one of word_tags.background are not references")
    person_labels: list[str] = setting(factory=lambda: list(PERSON_LABELS), help=
        "class names that are people: faces are searched inside these masks' boxes (unless faces=false); "
        "compared case-insensitively")
    pool: TaskPool = setting(factory=lambda: TaskPool(batch_size=8, num_cpus=1.0),
                             help="keys per task")

    def __post_init__(self) -> None:
        if not 0 <= self.duplicate_iou <= 1 or not 0 <= self.min_mask_area <= 1:
            raise ValueError("opens2v.duplicate_iou and opens2v.min_mask_area must be within [0, 1]")


@dataclass(frozen=True)
class Folders:
    """Where a part's files are: videos (required), backgrounds and views (optional)."""

    videos: str
    backgrounds: str | None = None
    views: str | None = None


def clip_status(entry: Entry, config: OpenS2VConfig) -> str:
    """``kept``, or the first clip quality filter the entry fails."""
    for name, floor in (("aesthetic", config.min_aesthetic), ("motion", config.min_motion), ("tech", config.min_tech)):
        value = entry.scores.get(name)
        if value is not None and value < floor:
            return f"low_{name}"
    return KEPT


def import_key(entry: Entry, folders: Folders, config: OpenS2VConfig) -> dict[str, list[dict[str, Any]]]:
    """Rows for table ``videos``, ``clips``, ``objects`` and ``pairs`` of one key.

    Raises ``LayoutError`` / ``BadVideoError`` naming the file and field when the key is broken.
    """
    uri = os.path.join(folders.videos, entry.path)
    if not os.path.exists(uri):
        raise LayoutError(f"{uri}: the video of key {entry.key!r} (metadata.path) does not exist")
    video = probe_video(uri)
    fps = video["fps"] or entry.fps
    start, end = entry.face_cut
    end = min(end, video["num_frames"])
    if end <= start:
        raise LayoutError(f"{uri}: metadata.face_cut {list(entry.face_cut)} of key {entry.key!r} lies past the "
                          f"video's {video['num_frames']} frames")
    x, y, w, h = entry.crop
    if x + w > video["width"] or y + h > video["height"]:
        raise LayoutError(f"{uri}: metadata.crop of key {entry.key!r} ({x}, {y}, {w}x{h}) exceeds the "
                          f"{video['width']}x{video['height']} frame")
    cid = clip_id(video["video_id"], start, end)
    status = clip_status(entry, config)
    subjects = list(dict.fromkeys(entry.words.get("subject", []) + entry.words.get("object", [])))
    clip = {"clip_id": cid, "video_id": video["video_id"], "uri": uri, "start_frame": start, "end_frame": end,
            "start_s": start / fps, "end_s": end / fps, "fps": fps, "width": video["width"],
            "height": video["height"], "motion": entry.scores.get("motion"),
            "aesthetic": entry.scores.get("aesthetic"), "status": status, "caption": entry.caption,
            "subjects": subjects, "crop": [float(v) for v in entry.crop]}
    rows: dict[str, list[dict[str, Any]]] = {"videos": [video], "clips": [clip], "objects": [], "pairs": []}
    if status != KEPT:
        return rows  # stages 2-4 take kept clips only
    frame_number = start + entry.ann_frame
    # By number from the video's first frame (OpenS2V counts frames, it records no times).
    frames = read_clip_frames(uri, 0, frame_number + 1, 0.0, float("inf"), at_frames([frame_number]))
    image = frames.images[0][y:y + h, x:x + w]
    rows["objects"] = object_rows(entry, cid, frame_number, image, (video["width"], video["height"]), config)
    rows["pairs"] = pair_rows(entry, cid, rows["objects"], frame_number, folders)
    return rows


def import_keys(rows: list[dict[str, Any]], folders: Folders, config: OpenS2VConfig, source: str
                ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """A batch of keys (``key``, ``offset`` and ``length`` of its value in the part ``source``
    (``scan.scan_part``), ``parse_error``) -> (``imports`` rows with the envelope, one error row
    per broken key; the other tables' rows of the good keys)."""
    imports: list[dict[str, Any]] = []
    tables: dict[str, list[dict[str, Any]]] = {"videos": [], "clips": [], "objects": [], "pairs": []}
    for row in rows:
        key = str(row["key"])
        try:
            if row.get("parse_error"):
                raise LayoutError(row["parse_error"])
            value = json.loads(read_span(source, int(row["offset"]), int(row["length"])))
            out = import_key(read_entry(key, value, source), folders, config)
        except Exception as exc:  # noqa: BLE001 - a broken key is that key's error row
            imports.append(error_row(key, exc))
            continue
        for table, produced in out.items():
            tables[table].extend(produced)
        clip = out["clips"][0]
        imports.append({INPUT: key, "key": key, "dataset": "opens2v", "source": source, "clip_id": clip["clip_id"],
                        "uri": clip["uri"], "status": clip["status"]})
    return imports, tables


def object_rows(entry: Entry, cid: str, frame_number: int, image: np.ndarray, frame_size: tuple[int, int],
                config: OpenS2VConfig) -> list[dict[str, Any]]:
    """One ``objects`` row per mask of the annotated frame (kept, duplicate or filtered)."""
    height, width = image.shape[:2]
    x, y, _, _ = entry.crop
    background = {w.lower() for w in entry.words.get("background", [])} if config.drop_background_words else set()
    masks = {a.idx: decode_rle(a.rle, width, height, f"{entry.source}: key {entry.key!r}: field annotation.mask_annotation."
                               f"{entry.ann_frame}.{a.idx}") for a in entry.annotations}
    order = sorted(entry.annotations, key=lambda a: (-(a.gme_score or 0.0), int(a.idx)))
    kept: list[str] = []
    rows = []
    for ann in order:
        mask = masks[ann.idx]
        area = int(mask.sum())
        status = KEPT
        if area == 0 or area < config.min_mask_area * width * height:
            status = "small_mask"
        elif ann.class_name.lower() in background:
            status = "background_word"
        elif (ann.gme_score or 0.0) < config.min_gme_score:
            status = "low_gme_score"
        elif (ann.aes_score or 0.0) < config.min_aes_score:
            status = "low_aes_score"
        elif any(mask_iou(mask, masks[other]) >= config.duplicate_iou for other in kept):
            status = "duplicate"
        row = {"object_id": object_id(cid, int(ann.idx)), "clip_id": cid, "label": ann.class_name,
               "frame": frame_number, "score": ann.gme_score, "area": area, "status": status,
               "box": None, "mask": None, "ref": None, "solidity": None, "face_iou": None}
        if area:
            cutout, (bx, by, bw, bh) = rgba_cutout(image, mask)
            full = np.zeros(frame_size[::-1], bool)
            full[y:y + height, x:x + width] = mask
            row.update(box=[bx + x, by + y, bw, bh], mask=encode_mask(full), ref=encode_png(cutout))
        if status == KEPT:
            kept.append(ann.idx)
        rows.append(row)
    return sorted(rows, key=lambda r: r["object_id"])


_VIEW = re.compile(r"^(\d+)_(.+)\.png$")


def pair_rows(entry: Entry, cid: str, objects: list[dict[str, Any]], frame_number: int,
              folders: Folders) -> list[dict[str, Any]]:
    """The key's generated views (variants of its kept objects) and background, as ``pairs`` rows."""
    rows = []
    kept = {r["object_id"]: r for r in objects if r["status"] == KEPT}
    folder = os.path.join(folders.views, entry.key) if folders.views else None
    if folder and os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            match = _VIEW.match(name)
            source = object_id(cid, int(match.group(1))) if match else None
            if source not in kept:
                continue  # a view of a filtered or duplicate mask: no reference to vary
            rows.append({"pair_id": variant_id(source), "clip_id": cid, "kind": "object", "source_id": source,
                         "image": _png_file(os.path.join(folder, name)), "variant_source": "generated",
                         "model": MODEL, "prompt": None, "seed": None, "frame": None, "mask": None,
                         "params": None, "status": KEPT})
    path = os.path.join(folders.backgrounds, f"{entry.key}.png") if folders.backgrounds else None
    if path and os.path.exists(path):
        rows.append({"pair_id": background_id(cid), "clip_id": cid, "kind": "background", "source_id": cid,
                     "image": _png_file(path), "variant_source": None, "model": MODEL, "prompt": None,
                     "seed": None, "frame": frame_number, "mask": None, "params": None, "status": KEPT})
    return rows


def _png_file(path: str) -> bytes:
    """A PNG's bytes as stored (any other image format is re-encoded as PNG)."""
    with open(path, "rb") as stream:
        data = stream.read()
    if data.startswith(b"\x89PNG"):
        return data
    try:
        return encode_png(decode_png(data, "RGBA"))
    except Exception as err:  # noqa: BLE001 - PIL raises several kinds
        raise LayoutError(f"{path}: not a readable image ({err})") from None


def cross_pair_rows(pairs: list[dict], clip_of_key: dict[str, str], objects: dict[str, list[dict]]) -> list[dict]:
    """OpenS2V's cross-video pairs as ``cross_pairs`` rows between our kept objects.

    Their pairs are per class (``cur_class_name`` of one key with ``aft_class_name`` of
    another), not per identity: each side becomes the kept object of that key's clip whose mask
    index is the pair's class id (``cur_class_id``), else the kept object of that label (the
    best-scored one when a label has several). ``identity_a``/``identity_b``
    are those object ids; ``similarity`` is their ``image_similarity``. A side whose key was
    not imported, or whose label has no kept object, gives no row.
    """
    def side(key: str, label: str, idx: Any) -> tuple[str, str] | None:
        clip = clip_of_key.get(pair_key(key))
        if clip is None:
            return None
        kept = [o for o in objects.get(clip, []) if o["status"] == KEPT]
        if idx is not None:  # the class id is the mask index: that very object, when it is kept
            exact = [o for o in kept if o["object_id"] == object_id(clip, int(idx))]
            if exact:
                return exact[0]["object_id"], clip
        same = [o for o in kept if o["label"] == label]
        same.sort(key=lambda o: (-(o.get("score") or 0.0), o["object_id"]))
        return (same[0]["object_id"], clip) if same else None

    rows: dict[str, dict] = {}
    for pair in pairs:
        a = side(str(pair["cur_id"]), str(pair.get("cur_class_name")), pair.get("cur_class_id"))
        b = side(str(pair["aft_id"]), str(pair.get("aft_class_name")), pair.get("aft_class_id"))
        if a is None or b is None or a[1] == b[1]:
            continue
        (first, clip_a), (second, clip_b) = sorted([a, b])
        pid = cross_pair_id(first, second)
        similarity = float(pair.get("image_similarity") or pair.get("text_similarity") or 0.0)
        if pid not in rows or similarity > rows[pid]["similarity"]:
            rows[pid] = {"pair_id": pid, "identity_a": first, "clip_a": clip_a, "identity_b": second,
                         "clip_b": clip_b, "similarity": similarity, "status": KEPT}
    return [rows[k] for k in sorted(rows)]

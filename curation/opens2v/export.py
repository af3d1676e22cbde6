"""Our samples in OpenS2V-5M's layout, so their loader (and our importer) reads our curation.

One key per sample (its ``sample_id``). ``metadata`` carries the clip (``path`` relative
to a videos root, ``face_cut`` = our frame range, ``crop`` back in their [x0, x1, y0, y1]
order, ``fps``, ``face_cap_qwen`` = our caption, ``aesthetic``/``motion``). Their masks
live on one annotated frame per key: the frame most of the sample's object references
were cut from becomes ``ann_frame_idx``, and each of those objects becomes a mask (its
stage 2 mask, cut to the crop, as a COCO RLE), a ``mask_map`` entry and an annotation
with its box and score. References from other frames, and faces (which carry a crop box,
not a mask), are left out and counted. Object variants become views
``<key>/<idx>_<label>.png``; the background ``<key>.png``.

Cross pairs (``pair_lists``) become their pair lists: ``cross_frames_pairs.json``
``{cluster: [pair]}`` with ``cur_id``/``aft_id`` = ``<part folder>/<key>``, the mask indices
and class names of both sides (``cur_class_id``/``cur_class_name``, ``aft_...``), the
``image_similarity`` and the annotated frames (``cur_frame_idx``/``aft_frame_idx``), and
``cluster_videos.json`` ``{cluster: [member ids]}`` (a cluster is a connected set of paired
keys). Pairs between exported masks only: a side that is a face identity (faces are not
exported) or an object left out of its key is counted, not written.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from curation.images import decode_png
from curation.opens2v.layout import encode_rle


def view_name(idx: int, label: str) -> str:
    """A view's file name as OpenS2V writes them: ``<idx>_<class>.png``."""
    return f"{idx}_{label.replace('/', '_')}.png"


@dataclass(frozen=True)
class Mask:
    """Where an exported object landed: its key, mask index, class name and annotated frame."""

    key: str
    idx: int
    class_name: str
    frame_idx: int


def sample_entry(sample: dict[str, Any], objects: dict[str, dict[str, Any]], clip: dict[str, Any] | None,
                 videos_root: str) -> tuple[dict[str, Any], dict[str, bytes], Counter, dict[str, Mask]]:
    """(the key's entry, files to write relative to the export root, what was left out, the
    exported objects by object id).

    ``objects`` maps object_id to its ``objects`` row (``frame``, ``box``, ``mask``, ``score``);
    ``clip`` is the sample's ``clips`` row (quality scores) when there is one.
    """
    key = sample["sample_id"]
    start, end = int(sample["start_frame"]), int(sample["end_frame"])
    crop = sample.get("crop")
    left_out: Counter = Counter()
    items = [(item, objects.get(item.get("source_id") or "")) for item in sample.get("objects") or []]
    left_out["object_without_row"] = sum(1 for _, row in items if row is None or row.get("mask") is None)
    items = [(item, row) for item, row in items if row is not None and row.get("mask") is not None]
    frames = Counter(int(row["frame"]) for _, row in items)
    ann_frame = frames.most_common(1)[0][0] if frames else start
    left_out["object_on_other_frame"] = sum(1 for _, row in items if int(row["frame"]) != ann_frame)
    left_out["face"] = len(sample.get("faces") or [])
    files: dict[str, bytes] = {}
    mask_map, masks, annotations, placed = {}, {}, [], {}
    for idx, (item, row) in enumerate(((i, r) for i, r in items if int(r["frame"]) == ann_frame), start=1):
        full = decode_png(row["mask"], "L") > 0
        if crop is not None:
            x, y, w, h = (int(round(v)) for v in crop)
            full = full[y:y + h, x:x + w]
        cx, cy = (crop[0], crop[1]) if crop is not None else (0.0, 0.0)
        bx, by, bw, bh = row["box"]
        label = item.get("label") or row["label"]
        mask_map[str(idx)] = {"class_name": label}
        placed[row["object_id"]] = Mask(key, idx, label, ann_frame - start)
        masks[str(idx)] = encode_rle(full)
        annotations.append({"class_name": label, "bbox": [bx - cx, by - cy, bx - cx + bw, by - cy + bh],
                            "gme_score": row.get("score"), "aes_score": None})
        if item.get("variant") and item.get("variant_source") == "generated":
            files[os.path.join("views", key, view_name(idx, label))] = item["variant"]
    if sample.get("background"):
        files[os.path.join("backgrounds", f"{key}.png")] = sample["background"]
    height, width = _frame_size(sample, items, clip)
    x0, y0, w, h = (int(round(v)) for v in crop) if crop is not None else (0, 0, width, height)
    metadata: dict[str, Any] = {
        "path": os.path.relpath(sample["uri"], videos_root), "crop": [x0, x0 + w, y0, y0 + h],
        "face_cut": [start, end], "cut": [start, end], "fps": sample.get("fps"), "num_frames": end - start,
        "face_cap_qwen": sample["caption"]}
    if clip:
        metadata.update({k: clip[k] for k in ("aesthetic", "motion") if clip.get(k) is not None})
    words = {"subject": [f["label"] for f in sample.get("faces") or [] if f.get("label")],
             "object": [a["class_name"] for a in annotations], "background": []}
    entry = {"metadata": metadata, "word_tags": words, "annotation": {
        "ann_frame_data": {"ann_frame_idx": ann_frame - start, "annotations": annotations, "box_format": "xyxy"},
        "mask_map": mask_map, "mask_annotation": {str(ann_frame - start): masks}}}
    return entry, files, left_out, placed


def pair_lists(cross_pairs: list[dict[str, Any]], masks: dict[str, Mask], folder: str
               ) -> tuple[dict[str, list[str]], dict[str, list[dict[str, Any]]], Counter]:
    """(``cluster_videos``, ``cross_frames_pairs``, left out) for our ``cross_pairs`` rows, whose
    identities are looked up in ``masks`` (``sample_entry``'s exported objects)."""
    left_out: Counter = Counter()
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    pairs = []
    for row in sorted(cross_pairs, key=lambda r: r["pair_id"]):
        a, b = masks.get(row["identity_a"]), masks.get(row["identity_b"])
        if a is None or b is None:
            left_out["cross_pair_not_of_exported_masks"] += 1
            continue
        parent[root(a.key)] = root(b.key)
        pairs.append({"cur_id": f"{folder}/{a.key}", "aft_id": f"{folder}/{b.key}", "cur_class_id": a.idx,
                      "cur_class_name": a.class_name, "aft_class_id": b.idx, "aft_class_name": b.class_name,
                      "image_similarity": row["similarity"], "cur_frame_idx": a.frame_idx,
                      "aft_frame_idx": b.frame_idx})
    names = {r: f"cluster_{n}" for n, r in enumerate(sorted({root(k) for k in parent}))}
    clusters: dict[str, list[str]] = {name: [] for name in names.values()}
    for key in sorted(parent):
        clusters[names[root(key)]].append(f"{folder}/{key}")
    by_cluster: dict[str, list[dict[str, Any]]] = {name: [] for name in names.values()}
    for pair in pairs:
        by_cluster[names[root(pair["cur_id"].rsplit("/", 1)[-1])]].append(pair)
    return clusters, by_cluster, left_out


def _frame_size(sample: dict[str, Any], items: list, clip: dict[str, Any] | None) -> tuple[int, int]:
    """The source frame's (height, width): the clip's, else a stage 2 mask's (full-frame), else the crop's."""
    if clip and clip.get("width") and clip.get("height"):
        return int(clip["height"]), int(clip["width"])
    for _, row in items:
        shape = decode_png(row["mask"], "L").shape
        return int(shape[0]), int(shape[1])
    crop = sample.get("crop")
    if crop is not None:
        return int(crop[1] + crop[3]), int(crop[0] + crop[2])
    raise ValueError(f"sample {sample['sample_id']}: no clip row, mask or crop to size its frame")

"""OpenS2V-5M's on-disk layout, read key by key, with errors that name the file and field.

A dataset part is one JSON object ``{key: {metadata, word_tags, annotation}}`` (the
OpenS2V-Nexus repository's ``data_process/demo_result`` holds a complete example):

* ``metadata``: ``path`` (the video, relative to the part's video folder), ``crop``
  ([x0, x1, y0, y1], the watermark crop), ``face_cut`` ([start, end) frames), ``fps``,
  ``face_cap_qwen`` (the caption; ``cap`` is older), quality scores ``aesthetic``,
  ``motion``, ``tech``.
* ``annotation.mask_map`` ``{idx: {class_name}}``; ``annotation.mask_annotation[frame][idx]``
  a COCO RLE of the *watermark-cropped* frame (a dict, or a string holding a Python dict
  repr, as in their example run); ``annotation.ann_frame_data`` (``ann_frame_idx``, and per
  annotation ``bbox`` x0, y0, x1, y1 with ``gme_score`` / ``aes_score``; annotation i is
  mask idx i + 1).

``scan.scan_part`` finds each key's bytes in a part without holding the file; ``read_entry``
checks one key's value.
"""

from __future__ import annotations

import ast
import glob
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask


class LayoutError(ValueError):
    """A field of an OpenS2V file that cannot be read; the message names the file and field."""


@dataclass(frozen=True)
class Annotation:
    """One mask of a key: its index in ``mask_map`` and what OpenS2V scored it."""

    idx: str
    class_name: str
    rle: dict
    bbox: tuple[float, float, float, float] | None  # x0, y0, x1, y1 in the cropped frame
    gme_score: float | None
    aes_score: float | None


@dataclass(frozen=True)
class Entry:
    """One key of a part, checked: everything the importer needs, in our terms."""

    key: str
    path: str
    crop: tuple[int, int, int, int]  # x, y, w, h in source px
    face_cut: tuple[int, int]  # [start, end) frames of the video
    caption: str
    fps: float | None
    scores: dict[str, float]  # aesthetic, motion, tech (whatever the entry has)
    ann_frame: int  # the annotated frame, counted from face_cut's start
    annotations: tuple[Annotation, ...]
    words: dict[str, list[str]]
    source: str = ""  # the part file, for error messages


def _field(value: dict, path: str, source: str, key: str) -> Any:
    node: Any = value
    for name in path.split("."):
        if not isinstance(node, dict) or name not in node:
            raise LayoutError(f"{source}: key {key!r}: field {path} is missing")
        node = node[name]
    return node


def parse_rle(value: Any, where: str) -> dict:
    """A COCO RLE ``{size: [h, w], counts}`` from a dict or a string holding a dict repr."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError) as err:
            raise LayoutError(f"{where}: not an RLE dict ({err})") from None
    if not isinstance(value, dict) or "size" not in value or "counts" not in value:
        raise LayoutError(f"{where}: an RLE needs 'size' and 'counts'")
    return value


def decode_rle(rle: dict, width: int, height: int, where: str) -> np.ndarray:
    """The bool (height, width) mask of a COCO RLE; its size must be the cropped frame's."""
    size = [int(v) for v in rle["size"]]
    if size != [height, width]:
        raise LayoutError(f"{where}: RLE size {size} (h, w) disagrees with the crop's {width}x{height} "
                          f"(metadata.crop)")
    counts = rle["counts"]
    counts = counts.encode() if isinstance(counts, str) else counts
    try:
        return coco_mask.decode({"size": size, "counts": counts}).astype(bool)
    except Exception as err:  # noqa: BLE001 - pycocotools raises bare errors on bad counts
        raise LayoutError(f"{where}: RLE counts do not decode ({err})") from None


def encode_rle(mask: np.ndarray) -> dict:
    """A bool mask as a COCO compressed RLE with a text ``counts`` (JSON-safe)."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def read_entry(key: str, value: dict, source: str) -> Entry:
    """Check one key's entry and give it in our terms (crop as x, y, w, h; frames as a range)."""
    metadata = _field(value, "metadata", source, key)
    path = _field(value, "metadata.path", source, key)
    raw_crop = _field(value, "metadata.crop", source, key)
    if not (isinstance(raw_crop, list) and len(raw_crop) == 4):
        raise LayoutError(f"{source}: key {key!r}: field metadata.crop must be [x0, x1, y0, y1], got {raw_crop!r}")
    x0, x1, y0, y1 = (int(round(float(v))) for v in raw_crop)
    if x1 <= x0 or y1 <= y0:
        raise LayoutError(f"{source}: key {key!r}: field metadata.crop {raw_crop} is empty")
    cut = metadata.get("face_cut") or metadata.get("cut")
    if not (isinstance(cut, list) and len(cut) == 2 and int(cut[1]) > int(cut[0]) >= 0):
        raise LayoutError(f"{source}: key {key!r}: field metadata.face_cut must be [start, end), got {cut!r}")
    caption = metadata.get("face_cap_qwen") or (metadata.get("cap") or [None])[0]
    if not caption:
        raise LayoutError(f"{source}: key {key!r}: field metadata.face_cap_qwen is missing or empty")
    annotation = _field(value, "annotation", source, key)
    mask_map = _field(value, "annotation.mask_map", source, key)
    frames = _field(value, "annotation.mask_annotation", source, key)
    frame_data = annotation.get("ann_frame_data") or {}
    ann_frame = int(frame_data.get("ann_frame_idx", 0))
    masks = frames.get(str(ann_frame))
    if masks is None:
        raise LayoutError(f"{source}: key {key!r}: field annotation.mask_annotation has no frame {ann_frame} "
                          f"(ann_frame_data.ann_frame_idx)")
    scored = frame_data.get("annotations") or []
    annotations = []
    for idx in sorted(masks, key=lambda i: int(i)):
        where = f"{source}: key {key!r}: field annotation.mask_annotation.{ann_frame}.{idx}"
        if str(idx) not in mask_map:
            raise LayoutError(f"{where}: mask index {idx} is absent from annotation.mask_map")
        info = scored[int(idx) - 1] if 0 < int(idx) <= len(scored) else {}
        bbox = info.get("bbox")
        annotations.append(Annotation(str(idx), str(mask_map[str(idx)].get("class_name") or ""),
                                      parse_rle(masks[idx], where), tuple(bbox) if bbox else None,
                                      info.get("gme_score"), info.get("aes_score")))
    scores = {name: float(metadata[name]) for name in ("aesthetic", "motion", "tech")
              if isinstance(metadata.get(name), (int, float))}
    words = {k: list(v) for k, v in (value.get("word_tags") or {}).items() if isinstance(v, list)}
    fps = metadata.get("fps")
    return Entry(key, str(path), (x0, y0, x1 - x0, y1 - y0), (int(cut[0]), int(cut[1])), str(caption),
                 float(fps) if fps else None, scores, ann_frame, tuple(annotations), words, source)


def pair_key(value: str) -> str:
    """A pair list's ``cur_id``/``aft_id`` without its part folder (``dataset1_cluster/<key>``)."""
    return value.rsplit("/", 1)[-1]


def read_pair_lists(folder: str) -> list[dict]:
    """Every cross-video pair under ``folder``: ``cross_frames_pairs.json``, ``final_output/<cluster>.json``
    and any other JSON holding pairs (a list of pairs, or ``{cluster: [pairs]}``). A pair has
    ``cur_id``/``aft_id`` (keys, maybe with their part folder) and ``cur_class_name``/``aft_class_name``.
    ``cluster_videos.json`` (cluster -> member keys) holds no pairs and is skipped."""
    found: list[dict] = []
    for path in sorted(glob.glob(os.path.join(folder, "**", "*.json"), recursive=True)):
        with open(path, encoding="utf-8") as stream:
            try:
                data = json.load(stream)
            except json.JSONDecodeError as err:
                raise LayoutError(f"{path}: not JSON ({err})") from None
        groups = data.values() if isinstance(data, dict) else [data]
        for group in groups:
            if not isinstance(group, list):
                continue
            for item in group:
                if isinstance(item, dict) and "cur_id" in item and "aft_id" in item:
                    found.append({**item, "_file": path})
    return found

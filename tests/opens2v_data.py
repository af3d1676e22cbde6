"""A tiny OpenS2V-5M part in their layout, built from known shapes (nothing downloaded).

Two good keys on two generated videos (their handler names in a legacy code page, as
QuickTime stock footage has), one background PNG, one generated view, a pair list linking
the two keys' dogs, and four broken keys: a missing video, an RLE whose size is not the
crop's, a mask index absent from ``mask_map``, and a value cut off by a truncated file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from curation import synthetic
from curation.images import encode_png
from curation.opens2v.layout import encode_rle

WIDTH, HEIGHT = 128, 96
CROP = [0, 128, 16, 96]  # x0, x1, y0, y1: a 16 px watermark band on top is cut off
CW, CH = CROP[1] - CROP[0], CROP[3] - CROP[2]
CAPTION = "A woman walks a dog on the grass."


def shapes() -> dict[str, np.ndarray]:
    """Masks in the cropped frame: a person (labelled twice), a round dog, the grass."""
    yy, xx = np.mgrid[:CH, :CW]
    person = (xx >= 10) & (xx < 40) & (yy >= 5) & (yy < 70)
    woman = person.copy()
    woman[65:70] = False  # nearly the same mask, a second label
    dog = (xx - 90) ** 2 + (yy - 50) ** 2 <= 15 ** 2
    grass = yy >= 72
    return {"1": person, "2": woman, "3": dog, "4": grass}


CLASSES = {"1": "person", "2": "woman", "3": "dog", "4": "grass"}
GME = {"1": 0.28, "2": 0.43, "3": 0.45, "4": 0.3}


def entry(path: str, masks: dict[str, np.ndarray] | None = None, mask_map: dict | None = None) -> dict:
    masks = shapes() if masks is None else masks
    boxes = []
    for idx in sorted(masks, key=int):
        ys, xs = np.nonzero(masks[idx])
        boxes.append({"class_name": CLASSES.get(idx, "thing"), "bbox": [float(xs.min()), float(ys.min()),
                      float(xs.max() + 1), float(ys.max() + 1)], "gme_score": GME.get(idx, 0.3), "aes_score": 4.5})
    return {
        "metadata": {"path": path, "crop": CROP, "face_cut": [2, 22], "cut": [0, 24], "fps": 24.0, "num_frames": 24,
                     "resolution": {"height": HEIGHT, "width": WIDTH}, "face_cap_qwen": CAPTION,
                     "aesthetic": 5.1, "motion": 0.4, "tech": 2.0},
        "word_tags": {"subject": ["woman", "person"], "object": ["dog"], "background": ["grass"]},
        "annotation": {
            "ann_frame_data": {"ann_frame_idx": 3, "annotations": boxes},
            "mask_map": mask_map if mask_map is not None else {i: {"class_name": CLASSES[i]} for i in masks},
            # their example run stores each RLE as a string holding a Python dict repr
            "mask_annotation": {"3": {i: repr(encode_rle(m)) for i, m in masks.items()}},
        },
    }


def build(root: Path) -> dict[str, Path]:
    """Write the part under ``root``; returns its folders and files."""
    videos, backgrounds, views, pairs = (root / n for n in ("videos", "backgrounds", "views", "pairs"))
    for folder in (videos, backgrounds, views, pairs / "final_output"):
        folder.mkdir(parents=True, exist_ok=True)
    for name, seed in (("a.mp4", 0), ("b.mp4", 1)):
        synthetic.legacy_handler_video(videos / name, seconds=1.0, height=HEIGHT, width=WIDTH, seed=seed)
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (CH, CW, 3), dtype=np.uint8)
    (backgrounds / "key_a.png").write_bytes(encode_png(background))
    (views / "key_a").mkdir()
    view = rng.integers(0, 255, (40, 30, 4), dtype=np.uint8)
    (views / "key_a" / "3_dog.png").write_bytes(encode_png(view))
    small = {i: m[:68] for i, m in shapes().items() if i != "4"}  # an RLE of another size than the crop
    good = {"key_a": entry("a.mp4"), "key_b": entry("b.mp4"),
            "key_missing": entry("gone.mp4"), "key_rle_size": entry("a.mp4", masks=small),
            "key_bad_idx": entry("b.mp4", mask_map={"1": {"class_name": "person"}})}
    text = json.dumps(good, indent=1)
    cut = json.dumps({"key_truncated": entry("a.mp4")}, indent=1)
    text = text[:-2] + ",\n" + cut[2:len(cut) // 2]  # the last key's value stops half-way
    part = root / "dataset1.json"
    part.write_text(text)
    pair = {"cur_id": "dataset1_cluster/key_a", "aft_id": "dataset1_cluster/key_b", "cur_class_name": "dog",
            "aft_class_name": "dog", "text_similarity": 1.0, "image_similarity": 0.97, "cur_frame_idx": 3,
            "aft_frame_idx": 3}
    (pairs / "cluster_videos.json").write_text(json.dumps({"c0": ["dataset1_cluster/key_a", "dataset1_cluster/key_b"]}))
    (pairs / "final_output" / "c0.json").write_text(json.dumps({"c0": [pair]}))
    return {"json": part, "videos": videos, "backgrounds": backgrounds, "views": views, "pairs": pairs,
            "background": background, "view": view}

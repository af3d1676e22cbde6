"""A small OpenS2V-5M part in their layout, built from known shapes (nothing downloaded).

For tests and the import benchmark. Good keys sit on generated videos whose handler names
are in a legacy code page (as QuickTime stock footage has). Per good key: four masks on
the annotated frame (a person labelled twice, "person" and "woman"; a round dog; the
grass, a background word); key 0 has a background PNG and a generated view of its woman;
a pair list links key 0's dog with key 1's. ``broken=True`` adds four broken keys: a
missing video, an RLE whose size is not the crop's, a mask index absent from
``mask_map``, and a value cut off by a truncated file.

``build_faces`` writes a part whose videos show two faces inside the watermark crop, one
inside the person masks' box (``PERSON_BOX``) and one outside every mask (``OTHER_FACE``):
the faces pass over person boxes must find the first and never the second.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from curation import synthetic
from curation.faces import synthetic as faces_synthetic
from curation.images import encode_png
from curation.opens2v.layout import encode_rle

CAPTION = "A woman walks a dog on the grass."
CLASSES = {"1": "person", "2": "woman", "3": "dog", "4": "grass"}
GME = {"1": 0.28, "2": 0.43, "3": 0.45, "4": 0.3}
ANN_FRAME, FACE_CUT = 3, (2, 22)


def crop_of(width: int, height: int) -> list[int]:
    """Their [x0, x1, y0, y1]: a watermark band of 1/6 of the height cut off the top."""
    return [0, width, height // 6, height]


def shapes(width: int, height: int) -> dict[str, np.ndarray]:
    """Masks of the cropped frame (``width`` x ``height`` is the crop's size)."""
    yy, xx = np.mgrid[:height, :width]
    fx, fy = width / 128, height / 80  # drawn on a 128x80 crop, scaled
    person = (xx >= 10 * fx) & (xx < 40 * fx) & (yy >= 5 * fy) & (yy < 70 * fy)
    woman = person & (yy < 65 * fy)  # nearly the same mask, a second label
    dog = ((xx - 90 * fx) / fx) ** 2 + ((yy - 50 * fy) / fy) ** 2 <= 15 ** 2
    grass = yy >= 72 * fy
    return {"1": person, "2": woman, "3": dog, "4": grass}


def entry(path: str, width: int, height: int, masks: dict[str, np.ndarray] | None = None,
          mask_map: dict | None = None) -> dict:
    """One key's value in their part JSON (RLEs as strings holding a dict repr, as their example run has)."""
    crop = crop_of(width, height)
    masks = shapes(crop[1] - crop[0], crop[3] - crop[2]) if masks is None else masks
    boxes = []
    for idx in sorted(masks, key=int):
        ys, xs = np.nonzero(masks[idx])
        boxes.append({"class_name": CLASSES.get(idx, "thing"), "bbox": [float(xs.min()), float(ys.min()),
                      float(xs.max() + 1), float(ys.max() + 1)], "gme_score": GME.get(idx, 0.3), "aes_score": 4.5})
    return {
        "metadata": {"path": path, "crop": crop, "face_cut": list(FACE_CUT), "cut": [0, 24], "fps": 24.0,
                     "num_frames": 24, "resolution": {"height": height, "width": width}, "face_cap_qwen": CAPTION,
                     "aesthetic": 5.1, "motion": 0.4, "tech": 2.0},
        "word_tags": {"subject": ["woman", "person"], "object": ["dog"], "background": ["grass"]},
        "annotation": {
            "ann_frame_data": {"ann_frame_idx": ANN_FRAME, "annotations": boxes},
            "mask_map": mask_map if mask_map is not None else {i: {"class_name": CLASSES[i]} for i in masks},
            "mask_annotation": {str(ANN_FRAME): {i: repr(encode_rle(m)) for i, m in masks.items()}},
        },
    }


def build(root: Path, keys: int = 2, width: int = 128, height: int = 96, broken: bool = True) -> dict:
    """Write the part under ``root``; returns its folders and files, and the images written."""
    videos, backgrounds, views, pairs = (root / n for n in ("videos", "backgrounds", "views", "pairs"))
    for folder in (videos, backgrounds, views, pairs / "final_output"):
        folder.mkdir(parents=True, exist_ok=True)
    for n in range(keys):
        synthetic.legacy_handler_video(videos / f"v{n}.mp4", seconds=1.0, height=height, width=width, seed=n)
    crop = crop_of(width, height)
    cw, ch = crop[1] - crop[0], crop[3] - crop[2]
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (ch, cw, 3), dtype=np.uint8)
    (backgrounds / "key0.png").write_bytes(encode_png(background))
    (views / "key0").mkdir(exist_ok=True)
    view = rng.integers(0, 255, (40, 30, 4), dtype=np.uint8)
    (views / "key0" / "2_woman.png").write_bytes(encode_png(view))
    part = {f"key{n}": entry(f"v{n}.mp4", width, height) for n in range(keys)}
    if broken:
        small = {i: m[:ch * 6 // 7] for i, m in shapes(cw, ch).items() if i != "4"}  # RLEs of another size
        part.update({"key_missing": entry("gone.mp4", width, height),
                     "key_rle_size": entry("v0.mp4", width, height, masks=small),
                     "key_bad_idx": entry("v1.mp4", width, height, mask_map={"1": {"class_name": "person"}})})
    text = json.dumps(part, indent=1)
    if broken:
        cut = json.dumps({"key_truncated": entry("v0.mp4", width, height)}, indent=1)
        text = text[:-2] + ",\n" + cut[2:len(cut) // 2]  # the last key's value stops half-way
    path = root / "dataset1.json"
    path.write_text(text)
    pair = {"cur_id": "dataset1_cluster/key0", "aft_id": "dataset1_cluster/key1", "cur_class_name": "dog",
            "aft_class_name": "dog", "text_similarity": 1.0, "image_similarity": 0.97,
            "cur_frame_idx": ANN_FRAME, "aft_frame_idx": ANN_FRAME}
    (pairs / "cluster_videos.json").write_text(json.dumps({"c0": [f"dataset1_cluster/key{n}" for n in range(keys)]}))
    (pairs / "final_output" / "c0.json").write_text(json.dumps({"c0": [pair]}))
    return {"json": path, "videos": videos, "backgrounds": backgrounds, "views": views, "pairs": pairs,
            "background": background, "view": view, "crop": crop}


FACES_SIZE = 256  # the faces part's frames are square
FACE_WINDOW = 100  # each face is a 100 px window of the astronaut photo (face ~45 px wide)
PERSON_FACE, OTHER_FACE = (14, 80), (150, 80)  # the faces' windows' top-left corners, source px
PERSON_BOX = (8, 62, 112, 150)  # x, y, w, h in source px: the person masks' box (holds PERSON_FACE's window)


def faces_frame(number: int = 0) -> np.ndarray:
    """The faces part's frame: grey, the astronaut in the person box and again outside it, and
    ``number`` in white 16 px blocks in the watermark band (each video its own content hash)."""
    frame = np.full((FACES_SIZE, FACES_SIZE, 3), faces_synthetic.GREY[0], np.uint8)
    face = faces_synthetic.face_window(faces_synthetic.astronaut(), (FACE_WINDOW, FACE_WINDOW), zoom=1.5)
    for x, y in (PERSON_FACE, OTHER_FACE):
        frame[y:y + FACE_WINDOW, x:x + FACE_WINDOW] = face
    for bit in range(FACES_SIZE // 16):
        if number >> bit & 1:
            frame[:16, bit * 16:(bit + 1) * 16] = 255
    return frame


def build_faces(root: Path, keys: int = 2) -> dict:
    """A part of ``keys`` keys on videos of ``faces_frame``, masks "person" and "woman" (one
    subject, labelled twice) over ``PERSON_BOX``; empty background, view and pair folders."""
    folders = {n: root / n for n in ("videos", "backgrounds", "views", "pairs")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    crop = crop_of(FACES_SIZE, FACES_SIZE)
    yy, xx = np.mgrid[:crop[3] - crop[2], :crop[1] - crop[0]]
    x, y, w, h = PERSON_BOX[0] - crop[0], PERSON_BOX[1] - crop[2], PERSON_BOX[2], PERSON_BOX[3]
    person = (xx >= x) & (xx < x + w) & (yy >= y) & (yy < y + h)
    woman = person & (yy < y + h - 10)
    part = {}
    for n in range(keys):
        synthetic.write_video(folders["videos"] / f"v{n}.mp4", (faces_frame(n) for _ in range(24)))
        part[f"key{n}"] = entry(f"v{n}.mp4", FACES_SIZE, FACES_SIZE, masks={"1": person, "2": woman})
    path = root / "faces.json"
    path.write_text(json.dumps(part))
    return {"json": path, **folders, "crop": crop}

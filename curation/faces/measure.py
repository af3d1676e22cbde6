"""Everything stage 3 measures on one face while its frame is at hand.

The detection step (a GPU actor) gets a clip's decoded frames, its own and its
neighbouring segments', and turns every detected face into one row: where it is
(segment, frame, time, box and keypoints in source pixels), what the detector and
recognizer say (score, embedding and the model that made it), pose, sharpness, the
ranking score, the crop, and the first filter it fails (``quality.face_status``). Identities, ranks and
selection need all of a clip's faces at once and come after, on CPUs
(``curation/faces/references.py``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from curation.faces import FacesConfig
from curation.faces.detect import DetectedFace, FaceBackend
from curation.faces.pose import head_pose
from curation.faces.quality import KEPT, align_face, blur_score, face_status
from curation.faces.select import rank_score
from curation.images import crop_with_margin, encode_png

CLIP, BEFORE, AFTER = "clip", "before", "after"
SEGMENTS = (BEFORE, CLIP, AFTER)


def measure_faces(backend: FaceBackend, frame_sets: Mapping[str, Any], source_size: tuple[int, int],
                  config: FacesConfig, offset: tuple[float, float] = (0.0, 0.0)) -> list[dict[str, Any]]:
    """One row per face found on the frames of ``frame_sets`` ({segment: ClipFrames}).

    ``source_size`` is the (width, height) in source pixels the frames show (the video's,
    or its crop's, at ``offset`` in the video): boxes and keypoints are stored in the
    video's pixels whatever size the frames were decoded at; filters see the frames' edges.
    """
    images, where = [], []
    for segment in SEGMENTS:
        frames = frame_sets.get(segment)
        if frames is None:
            continue
        for k in range(len(frames)):
            images.append(frames.images[k])
            where.append((segment, int(frames.indices[k]), float(frames.times[k])))
    if not images:
        return []
    found = backend.detect(images)
    rows = []
    for image, (segment, frame, time_s), faces in zip(images, where, found):
        for face in faces:
            rows.append(_row(face, image, segment, frame, time_s, source_size, backend, config))
    if offset != (0.0, 0.0):
        for row in rows:
            shift(row, offset)
    return rows


def shift(row: dict[str, Any], offset: tuple[float, float]) -> None:
    """Move a face row measured on a crop to the video's pixels (box, keypoints, crop box)."""
    dx, dy = float(offset[0]), float(offset[1])
    row["box"] = [row["box"][0] + dx, row["box"][1] + dy, *row["box"][2:]]
    row["keypoints"] = [v + (dx if k % 2 == 0 else dy) for k, v in enumerate(row["keypoints"])]
    if row["crop_box"] is not None:
        row["crop_box"] = [row["crop_box"][0] + dx, row["crop_box"][1] + dy, *row["crop_box"][2:]]


def _row(face: DetectedFace, image: np.ndarray, segment: str, frame: int, time_s: float,
         source_size: tuple[int, int], backend: FaceBackend, config: FacesConfig) -> dict[str, Any]:
    height, width = image.shape[:2]
    scale = np.array([source_size[0] / width, source_size[1] / height], np.float64)
    yaw, pitch, roll = head_pose(face.landmarks if face.landmarks is not None else face.keypoints, (width, height))
    blur = blur_score(align_face(image, face.keypoints))
    x1, y1, x2, y2 = (float(v) for v in face.box)
    source_box = np.array([x1, y1, x2, y2]) * np.tile(scale, 2)
    source_keypoints = np.asarray(face.keypoints, np.float64) * scale
    status = face_status(box_xyxy=source_box, det_score=face.score, keypoints=source_keypoints, yaw=yaw, pitch=pitch,
                         roll=roll, blur=blur, frame_size=source_size, filters=config.filters,
                         min_det_score=config.backend_config.min_det_score)
    crop, crop_box = None, None
    visible = [max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)]
    if visible[2] > visible[0] and visible[3] > visible[1]:
        pixels, (cx, cy, cw, ch) = crop_with_margin(
            image, (visible[0], visible[1], visible[2] - visible[0], visible[3] - visible[1]), config.crop_margin)
        crop_box = [cx * scale[0], cy * scale[1], cw * scale[0], ch * scale[1]]
        # A filtered face is never a reference: skip its PNG (a third of this step's time at 720p) unless all are kept.
        if status == KEPT or config.crops == "all":
            crop = encode_png(np.ascontiguousarray(pixels))
    return {
        "segment": segment, "frame": frame, "time_s": time_s,
        "box": [source_box[0], source_box[1], source_box[2] - source_box[0], source_box[3] - source_box[1]],
        "keypoints": source_keypoints.reshape(-1).tolist(),
        "det_score": face.score, "score": float(rank_score(backend.confidence(face.score), yaw, pitch)),
        "yaw": yaw, "pitch": pitch, "roll": roll, "blur": blur,
        "embedding": np.asarray(face.embedding, np.float32).tolist(), "embedding_model": backend.embedding_model,
        "crop": crop, "crop_box": crop_box, "status": status,
    }

"""Stage-4 test inputs built from the schemas: clips, faces and objects rows with real images.

Stages 2 and 3 write these tables in a real run; here they are constructed so each test
knows the answer (where the subject is, which identities are one person).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.images import encode_png
from schemas.ids import clip_id as make_clip_id
from schemas.ids import face_id, object_id
from schemas.tables import schema_for


def disc_rgba(size: int = 48, colour=(200, 40, 40)) -> np.ndarray:
    """A coloured disc on transparency: what stage 2's RGBA reference of a ball looks like."""
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (size / 2 - 2) ** 2
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = np.where(inside, 255, 0)
    return rgba


def face_crop(shift: int = 0) -> np.ndarray:
    """The astronaut's face (scikit-image), as stage 3 would crop it."""
    from skimage import data

    image = data.astronaut()
    return image[50 + shift:190 + shift, 160:290].copy()


def clip_row(video: str = "v" * 24, start: int = 0, end: int = 48, caption: str = "a man plays with a red ball",
             uri: str = "/nonexistent.mp4", fps: float = 24.0, width: int = 128, height: int = 96, **extra) -> dict:
    return {"clip_id": make_clip_id(video, start, end), "video_id": video, "uri": uri, "start_frame": start,
            "end_frame": end, "start_s": start / fps, "end_s": end / fps, "fps": fps, "width": width,
            "height": height, "motion": 2.0, "aesthetic": 5.0, "status": "kept", "caption": caption,
            "subjects": ["man", "ball"], **extra}


def object_row(clip: dict, index: int, label: str, box, score: float, frame: int | None = None,
               status: str = "kept", mask: np.ndarray | None = None, ref: np.ndarray | None = None) -> dict:
    x, y, w, h = box
    if mask is None:
        mask = np.zeros((clip["height"], clip["width"]), np.uint8)
        mask[y:y + h, x:x + w] = 255
    return {"object_id": object_id(clip["clip_id"], index), "clip_id": clip["clip_id"], "label": label,
            "frame": clip["start_frame"] if frame is None else frame, "box": [float(v) for v in box],
            "score": score, "mask": encode_png(mask), "ref": encode_png(disc_rgba() if ref is None else ref),
            "area": int(w * h), "solidity": 0.95, "face_iou": 0.0, "status": status}


def face_row(clip: dict, index: int, identity: str | None, embedding: np.ndarray, box=(40, 10, 24, 28),
             det_score: float = 0.9, rank: int = 0, selected: bool = True, frame: int | None = None,
             status: str = "kept") -> dict:
    frame = clip["start_frame"] if frame is None else frame
    return {"face_id": face_id(clip["clip_id"], index), "clip_id": clip["clip_id"], "identity_id": identity,
            "segment": "clip", "frame": frame, "time_s": frame / clip["fps"], "box": [float(v) for v in box],
            "keypoints": [float(box[0] + box[2] * f) for f in (0.3, 0.4, 0.7, 0.4, 0.5, 0.6, 0.35, 0.8, 0.65, 0.8)],
            "det_score": det_score, "yaw": 0.0, "pitch": 0.0, "roll": 0.0, "blur": 100.0, "score": det_score,
            "embedding": [float(v) for v in embedding], "embedding_model": "test:constructed",
            "crop": encode_png(face_crop(index)), "crop_box": [float(v) for v in box], "rank": rank,
            "selected": selected, "status": status}


def table(kind: str, rows: list[dict]) -> pa.Table:
    schema = schema_for(kind)
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)


def people(count: int, dim: int = 512, seed: int = 0) -> np.ndarray:
    """``count`` unit vectors in random directions (512-d random vectors are ~orthogonal)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(count, dim))
    return base / np.linalg.norm(base, axis=1, keepdims=True)


def sighting(person: np.ndarray, similarity: float, seed: int) -> np.ndarray:
    """A unit vector whose cosine with ``person`` is exactly ``similarity`` (a noisy view of them)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=person.shape)
    noise -= noise.dot(person) * person
    noise /= np.linalg.norm(noise)
    return similarity * person + np.sqrt(1 - similarity ** 2) * noise

"""Face quality: the aligned crop, its sharpness, and the filters of Appendix B.3.

The paper discards "faces with extreme pose values or those detected at low quality
(e.g., blurred or occluded faces)". Each discarded face keeps its row with the filter
that dropped it as its status (the project's rule: nothing is dropped without a
trace), checked in this order, first failure wins:

1. ``low_quality``: the box's shorter side is under ``min_size`` source pixels or the
   detector's score is under the backend's ``min_det_score``;
2. ``occluded``: a keypoint lies outside the box (grown by ``keypoint_margin``) or
   outside the frame (a face cut by the frame's edge), or the keypoints fail the
   visibility check: with the eye line levelled, both eyes must lie above the nose
   tip, the nose tip above both mouth corners, and the mouth corners in left/right
   order (a hand over the mouth or a detector's guess at a hidden part breaks this);
3. ``pose``: |yaw|, |pitch| or |roll| beyond the limits;
4. ``blur``: the variance of the Laplacian of the aligned 112x112 grey crop (the same
   crop the recognizer sees, so the measure does not depend on the face's size in
   the frame) under ``min_blur``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from curation.faces.pose import ARCFACE_TEMPLATE
from curation.operator import setting

KEPT = "kept"
LOW_QUALITY, OCCLUDED, POSE, BLUR = "low_quality", "occluded", "pose", "blur"
FILTERS = (LOW_QUALITY, OCCLUDED, POSE, BLUR)
ALIGNED_SIZE = 112


@dataclass
class FaceFilters:
    """``faces.filters.*``: the thresholds ``face_status`` applies."""

    max_yaw: float = setting(60.0, help=
        "degrees; beyond it a face is recorded as pose (profiles make poor identity references)")
    max_pitch: float = setting(45.0, help="degrees, up or down")
    max_roll: float = setting(30.0, help="degrees of in-plane tilt")
    min_blur: float = setting(40.0, help="variance of the Laplacian on the aligned 112x112 grey crop; below: blur")
    min_size: int = setting(48, help="shorter box side in source pixels; below: low_quality")
    keypoint_margin: float = setting(0.1, help=
        "keypoints may lie this far outside the box (fraction of its size) before the face is occluded")

    def __post_init__(self) -> None:
        for name in ("max_yaw", "max_pitch", "max_roll"):
            if not 0 < getattr(self, name) <= 180:
                raise ValueError(f"filters.{name} must be in (0, 180] degrees, got {getattr(self, name)}")
        if self.min_blur < 0 or self.min_size < 1 or self.keypoint_margin < 0:
            raise ValueError("filters.min_blur and keypoint_margin must be >= 0, min_size >= 1")


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity (rotation, uniform scale, shift) taking ``source`` to ``target`` (Umeyama)."""
    src, dst = np.asarray(source, np.float64), np.asarray(target, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ sign @ vt
    variance = (src_c ** 2).sum() / len(src)
    scale = float(np.trace(np.diag(singular) @ sign) / variance) if variance > 0 else 1.0
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def align_face(image: np.ndarray, keypoints: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """The face warped onto ArcFace's 5-point template at ``size`` x ``size`` (the recognizer's view)."""
    matrix = similarity_transform(keypoints, ARCFACE_TEMPLATE * (size / 112.0))
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def blur_score(aligned: np.ndarray) -> float:
    """Variance of the Laplacian of the grey aligned crop: low means few sharp edges (blur)."""
    grey = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY) if aligned.ndim == 3 else aligned
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def keypoints_visible(keypoints: np.ndarray) -> bool:
    """The visibility check: eyes above nose above mouth, mouth corners in order, with the eye line levelled.

    The tilt comes from the eye line itself, not from the pose estimate, so a bad pose
    fit cannot hide (or invent) a broken layout.
    """
    points = np.asarray(keypoints, np.float64).reshape(5, 2)
    eye_vector = points[1] - points[0]
    angle = -np.arctan2(eye_vector[1], eye_vector[0])
    centre = points[:2].mean(axis=0)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    upright = (points - centre) @ rotation.T
    eyes, nose, mouth = upright[:2], upright[2], upright[3:]
    return bool(eyes[:, 1].max() < nose[1] < mouth[:, 1].min() and mouth[0, 0] < mouth[1, 0])


def keypoints_inside(keypoints: np.ndarray, box_xyxy: np.ndarray, margin: float,
                     frame_size: tuple[int, int]) -> bool:
    """Every keypoint inside the box grown by ``margin`` of its size, and inside the frame."""
    points = np.asarray(keypoints, np.float64).reshape(-1, 2)
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    width, height = frame_size
    in_box = ((points[:, 0] >= x1 - dx) & (points[:, 0] <= x2 + dx)
              & (points[:, 1] >= y1 - dy) & (points[:, 1] <= y2 + dy))
    in_frame = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    return bool(in_box.all() and in_frame.all())


def face_status(*, box_xyxy: np.ndarray, det_score: float, keypoints: np.ndarray, yaw: float, pitch: float,
                roll: float, blur: float, frame_size: tuple[int, int], filters: FaceFilters,
                min_det_score: float) -> str:
    """``kept`` or the first filter (in the module's order) the face fails."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    if min(x2 - x1, y2 - y1) < filters.min_size or det_score < min_det_score:
        return LOW_QUALITY
    if not keypoints_inside(keypoints, box_xyxy, filters.keypoint_margin, frame_size) \
            or not keypoints_visible(keypoints):
        return OCCLUDED
    if abs(yaw) > filters.max_yaw or abs(pitch) > filters.max_pitch or abs(roll) > filters.max_roll:
        return POSE
    if blur < filters.min_blur:
        return BLUR
    return KEPT

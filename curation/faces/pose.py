"""Head pose (yaw, pitch, roll) from 2-D facial landmarks with OpenCV ``solvePnP``.

Appendix B.3 estimates "the yaw, pitch, and roll of each face" to drop extreme poses
and to spread each identity's references over poses. Both backends go through this one
function, so their angles mean the same thing: dlib and InsightFace packs with a
68-point model (``1k3d68`` in buffalo_l / antelopev2) give the iBUG-68 layout; packs
without one give only the detector's 5 keypoints, which still fix yaw and roll well
(the nose tip is the only point off the face plane, so pitch is coarser).

The 3-D points are a generic adult head in millimetres (anthropometric means: 63 mm
between pupils, nose tip ~33 mm below the eye line and ~35 mm in front of it), in the camera's axes for a
face looking straight at it: x to the image's right, y down, z away from the camera,
origin at the nose tip. The 5-point model's x, y are ArcFace's 112 px alignment
template scaled to a 63 mm eye distance, so a face matching the template (what the
recognizer is trained on) at the frame's centre is frontal.

Angles, in degrees (R = Rz(roll) @ Ry(yaw) @ Rx(pitch), the head's rotation in the camera frame):

* ``yaw`` > 0: the face turns toward the image's left (its nose points left);
* ``pitch`` > 0: the face tilts down (its nose points down);
* ``roll`` > 0: the face rotates clockwise in the image.
"""

from __future__ import annotations

import cv2
import numpy as np

# ArcFace's 5-point template (112x112): eye centres, nose tip, mouth corners, image-left first.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)

_MM_PER_TEMPLATE_PX = 63.0 / float(ARCFACE_TEMPLATE[1, 0] - ARCFACE_TEMPLATE[0, 0])
_TEMPLATE_XY = (ARCFACE_TEMPLATE - ARCFACE_TEMPLATE[2]) * _MM_PER_TEMPLATE_PX
# Depth behind the nose tip (mm): eyes ~31, mouth corners ~25.
FIVE_POINT_MODEL = np.column_stack([_TEMPLATE_XY, [31.0, 31.0, 0.0, 25.0, 25.0]]).astype(np.float64)

# A subset of the iBUG-68 points that stays visible and rigid across yaw (no jaw
# contour, which slides with the silhouette; no brows or lips, which move with expression).
IBUG68_POINTS = (27, 30, 31, 35, 8, 36, 39, 42, 45, 48, 54)
IBUG68_MODEL = np.array([
    [0.0, -43.0, 18.0],    # 27 nasion (top of the nose between the eyes)
    [0.0, 0.0, 0.0],       # 30 nose tip
    [-14.0, 5.0, 20.0],    # 31 nostril wing, image left
    [14.0, 5.0, 20.0],     # 35 nostril wing, image right
    [0.0, 68.0, 25.0],     # 8  chin
    [-45.0, -33.0, 38.0],  # 36 outer eye corner, image left
    [-17.0, -33.0, 32.0],  # 39 inner eye corner, image left
    [17.0, -33.0, 32.0],   # 42 inner eye corner, image right
    [45.0, -33.0, 38.0],   # 45 outer eye corner, image right
    [-25.0, 25.0, 27.0],   # 48 mouth corner, image left
    [25.0, 25.0, 27.0],    # 54 mouth corner, image right
], np.float64)


def five_from_68(landmarks: np.ndarray) -> np.ndarray:
    """The 5 ArcFace keypoints (eye centres, nose tip, mouth corners) from iBUG-68 landmarks."""
    points = np.asarray(landmarks, np.float32)
    return np.stack([points[36:42].mean(axis=0), points[42:48].mean(axis=0), points[30], points[48], points[54]])


def camera_matrix(width: int, height: int) -> np.ndarray:
    """A pinhole camera with a ~60 degree horizontal field of view centred on the image."""
    focal = float(max(width, height)) * 0.87
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def angles_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of R = Rz(roll) @ Ry(yaw) @ Rx(pitch)."""
    r = np.asarray(rotation, np.float64)
    yaw = np.degrees(np.arcsin(np.clip(-r[2, 0], -1.0, 1.0)))
    pitch = np.degrees(np.arctan2(r[2, 1], r[2, 2]))
    roll = np.degrees(np.arctan2(r[1, 0], r[0, 0]))
    return float(yaw), float(pitch), float(roll)


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The inverse of ``angles_from_rotation`` (for tests and synthetic faces)."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def model_for(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 3-D model and the matching 2-D points for a 5- or 68-point landmark array."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    if len(points) == 68:
        return IBUG68_MODEL, points[list(IBUG68_POINTS)]
    if len(points) == 5:
        return FIVE_POINT_MODEL, points
    raise ValueError(f"head pose needs 5 or 68 landmarks, got {len(points)}")


def head_pose(points: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a face from its 5 or 68 landmarks.

    ``image_size`` is the (width, height) of the frame the points are in. The fit starts
    from a frontal head in front of the camera, so the iterative solver cannot flip to
    the mirror solution a planar 5-point fit allows.
    """
    model, image_points = model_for(points)
    width, height = image_size
    camera = camera_matrix(width, height)
    centre = image_points.mean(axis=0)
    spread = float(np.linalg.norm(image_points[:, None] - image_points[None], axis=2).max())
    model_spread = float(np.linalg.norm(model[:, None, :2] - model[None, :, :2], axis=2).max())
    depth = camera[0, 0] * model_spread / max(spread, 1e-6)
    guess_t = np.array([[(centre[0] - camera[0, 2]) * depth / camera[0, 0]],
                        [(centre[1] - camera[1, 2]) * depth / camera[1, 1]], [depth]])
    ok, rvec, tvec = cv2.solvePnP(model, image_points.astype(np.float64), camera, None,
                                  rvec=np.zeros((3, 1)), tvec=guess_t, useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("solvePnP found no head pose for these landmarks")
    rotation, _ = cv2.Rodrigues(rvec)
    return angles_from_rotation(rotation)


def project(model: np.ndarray, yaw: float, pitch: float, roll: float, image_size: tuple[int, int],
            centre: tuple[float, float], distance_mm: float) -> np.ndarray:
    """Project a 3-D landmark model posed at (yaw, pitch, roll) ``distance_mm`` in front of
    the camera, with its nose tip on the pixel ``centre`` (synthetic faces for tests)."""
    width, height = image_size
    camera = camera_matrix(width, height)
    rvec, _ = cv2.Rodrigues(rotation_from_angles(yaw, pitch, roll))
    tvec = np.array([(centre[0] - camera[0, 2]) * distance_mm / camera[0, 0],
                     (centre[1] - camera[1, 2]) * distance_mm / camera[1, 1], distance_mm])
    points, _ = cv2.projectPoints(model, rvec, tvec, camera, None)
    return points.reshape(-1, 2)

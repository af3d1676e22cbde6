"""Generated face videos with known answers, for stage 3's tests, benchmarks and demo.

Real faces, nothing downloaded: scikit-image's ``astronaut`` (Eileen Collins) and the
``Tom_Hanks_54745.png`` test image that ships inside the ``insightface`` wheel (a
dependency of stage 3). Two different people, so a video that cuts between them has
exactly two identities. Each frame is a window of a photo: moved (pan), resized
(zoom) and rotated about the face (roll), so what a correct stage must find is known.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from curation.synthetic import FPS, write_video

GREY = (110, 110, 110)  # what lies outside a photo: flat, so it holds no face


@dataclass(frozen=True)
class FacePhoto:
    """A photo with one face: where the face's centre is and how wide it is (pixels)."""

    image: np.ndarray
    face_centre: tuple[float, float]
    face_width: float


def astronaut() -> FacePhoto:
    """scikit-image's astronaut: face box ~[175, 76, 266, 167] (dlib's HOG)."""
    from skimage import data

    return FacePhoto(data.astronaut(), (220.0, 122.0), 91.0)


def tom_hanks() -> FacePhoto:
    """InsightFace's bundled 112x112 aligned test face, scaled to 200 px on a wide grey frame (face box ~[178, 213, 334, 369])."""
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the Tom Hanks test face ships with the insightface package; pip install insightface")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "images", "Tom_Hanks_54745.png")
    face = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    face = cv2.resize(face, (200, 200), interpolation=cv2.INTER_CUBIC)
    framed = cv2.copyMakeBorder(face, 160, 160, 160, 160, cv2.BORDER_CONSTANT, value=GREY)
    return FacePhoto(framed, (256.0, 285.0), 156.0)


def face_window(photo: FacePhoto, size: tuple[int, int], zoom: float = 1.0, shift: tuple[float, float] = (0.0, 0.0),
                angle: float = 0.0) -> np.ndarray:
    """One frame: the photo rotated by ``angle`` degrees (counter-clockwise) about the face,
    seen through a window centred ``shift`` px from the face whose width is
    ``3 * face_width / zoom``, resized to ``size`` (width, height)."""
    width, height = size
    cx, cy = photo.face_centre
    window = 3.0 * photo.face_width / zoom
    scale = width / window
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    matrix[0, 2] += width / 2.0 - cx - shift[0] * scale  # the window's centre lands on the frame's
    matrix[1, 2] += height / 2.0 - cy - shift[1] * scale
    return cv2.warpAffine(photo.image, matrix, (width, height), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=GREY)


def _motion(k: int, count: int) -> tuple[float, tuple[float, float], float]:
    """Frame ``k``'s (zoom, shift, rocking phase) of a posed sequence."""
    t = k / max(count - 1, 1)
    return 0.9 + 0.35 * t, (25.0 * (t - 0.5), -10.0 * (t - 0.5)), float(np.sin(2 * np.pi * t))


def posed_frames(photo: FacePhoto, count: int, size: tuple[int, int] = (256, 256), max_angle: float = 6.0,
                 tilted: dict[int, float] | None = None) -> Iterable[np.ndarray]:
    """``count`` frames that pan across, zoom into and gently rock the face (within ``max_angle``);
    frame ``k`` in ``tilted`` is instead rotated by ``tilted[k]`` degrees."""
    tilted = tilted or {}
    for k in range(count):
        zoom, shift, phase = _motion(k, count)
        yield face_window(photo, size, zoom=zoom, shift=shift, angle=tilted.get(k, max_angle * phase))


def posed_face_centres(photo: FacePhoto, count: int, size: tuple[int, int] = (256, 256)) -> np.ndarray:
    """(count, 2): where the face's centre is on each frame of ``posed_frames`` (the ground truth)."""
    centres = []
    for k in range(count):
        zoom, shift, _ = _motion(k, count)
        scale = size[0] / (3.0 * photo.face_width / zoom)
        centres.append((size[0] / 2.0 - shift[0] * scale, size[1] / 2.0 - shift[1] * scale))
    return np.asarray(centres)


def posed_face_video(path: str | os.PathLike, seconds: float = 2.0, size: tuple[int, int] = (256, 256),
                     fps: int = FPS, tilted: dict[int, float] | None = None) -> Path:
    """The astronaut panned, zoomed and rocked; frames in ``tilted`` rotated by the given degrees."""
    return write_video(path, posed_frames(astronaut(), int(round(seconds * fps)), size, tilted=tilted), fps=fps)


def cut_video(path: str | os.PathLike, parts: Sequence[tuple[FacePhoto | None, float]],
              size: tuple[int, int] = (256, 256), fps: int = FPS) -> Path:
    """Shots of ``seconds`` each showing a photo's face (panned and zoomed), or no face (``None``:
    a flat grey shot), cut hard one after the other."""
    def frames() -> Iterable[np.ndarray]:
        for photo, seconds in parts:
            count = int(round(seconds * fps))
            if photo is None:
                for _ in range(count):
                    yield np.full((size[1], size[0], 3), 96, np.uint8)
            else:
                yield from posed_frames(photo, count, size, max_angle=3.0)

    return write_video(path, frames(), fps=fps)


def shot_times(parts: Sequence[tuple[FacePhoto | None, float]], fps: int = FPS) -> list[tuple[float, float]]:
    """The [start, end) seconds of each shot of ``cut_video``."""
    bounds, start = [], 0
    for _, seconds in parts:
        count = int(round(seconds * fps))
        bounds.append((start / fps, (start + count) / fps))
        start += count
    return bounds

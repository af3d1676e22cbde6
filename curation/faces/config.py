"""Stage 3's settings (Appendix B.3), one dataclass per concern, filled by ``--set faces.<key>=...``.

The paper gives no numbers for stage 3 beyond "10 faces per identity"; the defaults
here are the values a reference set for identity preservation needs and are said
next to each key. Score and similarity thresholds belong to a backend (SCRFD's
probability and dlib's HOG margin are different scales; ArcFace and dlib embeddings
are different spaces), so they live in the backend's own section.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from curation.operator import ActorPool, TaskPool, setting

BACKENDS = ("insightface", "dlib")
CROPS = ("selected", "all")


@dataclass
class InsightFaceConfig:
    det_size: int = setting(640, help="SCRFD's square input in pixels; each frame is letterboxed into it")
    det_thresh: float = setting(0.5, help="SCRFD score under which a box is not a detection at all")
    min_det_score: float = setting(0.6, help="detections scoring below this are recorded as low_quality")
    min_similarity: float = setting(0.4, help="ArcFace cosine similarity at which two faces are one person")

    def __post_init__(self) -> None:
        if self.det_size < 32 or self.det_size % 32:
            raise ValueError(f"det_size must be a multiple of 32 (SCRFD's coarsest stride), got {self.det_size}")
        _unit("det_thresh", self.det_thresh)
        _unit("min_det_score", self.min_det_score)
        _similarity(self.min_similarity)


@dataclass
class DlibConfig:
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
        _similarity(self.min_similarity)


@dataclass
class FaceFilters:
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


@dataclass
class FaceSelection:
    per_identity: int = setting(10, help="references chosen per identity, spread over the yaw range (the paper's 10)")
    from_neighbours: bool = setting(True, help="faces found in the neighbouring segments may be chosen too")

    def __post_init__(self) -> None:
        if self.per_identity < 1:
            raise ValueError(f"select.per_identity must be >= 1, got {self.per_identity}")


@dataclass
class FacesConfig:
    backend: str = setting("insightface", help=
        "insightface (SCRFD + ArcFace, the paper's) or dlib (HOG + ResNet, weights on PyPI)")
    every_s: float = setting(0.5, help="one frame per this many seconds of the clip and of its neighbouring segments")
    margin_s: float = setting(2.0, help=
        "seconds of video before and after the clip also searched (the paper's \"adjacent segments\"); 0: none")
    short_side: int = setting(720, help="frames are decoded with at most this short side (crops come from them)")
    crop_margin: float = setting(0.3, help="the stored crop is the box grown by this fraction of its size per side")
    crops: str = setting("selected", help="store the crop PNG of selected faces only, or of all faces (debugging)")
    insightface: InsightFaceConfig = field(default_factory=InsightFaceConfig)
    dlib: DlibConfig = field(default_factory=DlibConfig)
    filters: FaceFilters = field(default_factory=FaceFilters)
    select: FaceSelection = field(default_factory=FaceSelection)
    pool: ActorPool = setting(factory=lambda: ActorPool(actors=1, batch_size=2, num_cpus=1.0, num_gpus=0.5), help=
        "detection + embedding: clips per call; a share of a GPU per actor when the cluster has GPUs")
    decode_pool: TaskPool = setting(factory=lambda: TaskPool(batch_size=2, num_cpus=0.5), help=
        "the CPU step before it that decodes each clip's frames and its neighbours' (Ray tasks)")
    references_pool: TaskPool = setting(factory=lambda: TaskPool(batch_size=8, num_cpus=0.5), help=
        "identities, filters and selection: whole clips per task (Ray tasks)")

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"faces.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.crops not in CROPS:
            raise ValueError(f"faces.crops must be one of {', '.join(CROPS)}, got {self.crops!r}")
        if self.every_s <= 0 or self.margin_s < 0 or self.short_side < 32 or self.crop_margin < 0:
            raise ValueError("faces: need every_s > 0, margin_s >= 0, short_side >= 32, crop_margin >= 0")

    @property
    def backend_config(self) -> InsightFaceConfig | DlibConfig:
        return self.insightface if self.backend == "insightface" else self.dlib


def _unit(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _similarity(value: float) -> None:
    if not -1 <= value <= 1:
        raise ValueError(f"min_similarity is a cosine similarity in [-1, 1], got {value}")

"""Stage 3, face references (MAGREF Appendix B.3), one concept per module, each setting beside
the code it configures:

* ``segments``: ``FaceFrames``, the CPU operator that decodes a clip's and its neighbours' frames;
* ``detector``: ``FaceDetector``, the actor operator (detection, embedding, measurements);
* ``references``: ``FaceReferences``, the CPU operator over whole clips (identities, ranks,
  the selection), and ``clip_references``, what it does to one clip;
* ``detect``: the backend interface and InsightFace through ``FaceAnalysis``
  (``faces.insightface.*``); ``dlib_backend``: the dlib alternative (``faces.dlib.*``);
  ``tiny_pack``: the generated offline pack;
* ``pose``: yaw, pitch, roll from landmarks (``solvePnP``); ``quality``: the aligned crop, blur
  and the filters (``faces.filters.*``); ``measure``: one row per detected face;
* ``identities``: clustering and joining; ``select``: ranking and the pose-spanning choice
  (``faces.select.*``); ``synthetic``: face videos for tests.

The stage's own keys (``faces.backend``, ``every_s``, ``margin_s``, pools, ...) are
``FacesConfig`` below: its three operators share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from curation.faces.detect import InsightFaceConfig
from curation.faces.dlib_backend import DlibConfig
from curation.faces.quality import FaceFilters
from curation.faces.select import FaceSelection
from curation.operator import ActorPool, TaskPool, setting

BACKENDS = ("insightface", "dlib")
CROPS = ("selected", "all")
REGIONS = ("frame", "person_boxes")
# Object labels that name a person (OpenS2V-5M labels one person several ways: person, individual, woman).
PERSON_LABELS = ("person", "man", "woman", "individual", "people", "human", "boy", "girl", "child", "kid", "baby",
                 "lady", "gentleman", "guy", "teenager", "adult")


@dataclass
class FacesConfig:
    """``faces.*``: the stage's settings, shared by its three operators (frames, detection,
    references); each section's dataclass sits beside the code it configures."""

    backend: str = setting("insightface", help=
        "insightface (SCRFD + ArcFace, the paper's) or dlib (HOG + ResNet, weights on PyPI)")
    every_s: float = setting(0.5, help="one frame per this many seconds of the clip and of its neighbouring segments")
    margin_s: float = setting(2.0, help=
        "seconds of video before and after the clip also searched (the paper's \"adjacent segments\"); 0: none")
    short_side: int = setting(720, help="frames are decoded with at most this short side (crops come from them)")
    crop_margin: float = setting(0.3, help="the stored crop is the box grown by this fraction of its size per side")
    crops: str = setting("selected", help="store the crop PNG of selected faces only, or of all faces (debugging)")
    regions: str = setting("frame", help=
        "where faces are searched: frame (every_s over the clip and margin_s around it, inside its crop) or "
        "person_boxes (only inside the boxes of the clip's objects labelled one of person_labels, on those objects' "
        "frames; what pipelines/import_opens2v.py uses)")
    person_labels: list[str] = setting(factory=lambda: list(PERSON_LABELS), help=
        "object labels that name a person (regions=person_boxes), compared case-insensitively")
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
        if self.regions not in REGIONS:
            raise ValueError(f"faces.regions must be one of {', '.join(REGIONS)}, got {self.regions!r}")
        if self.crops not in CROPS:
            raise ValueError(f"faces.crops must be one of {', '.join(CROPS)}, got {self.crops!r}")
        if self.every_s <= 0 or self.margin_s < 0 or self.short_side < 32 or self.crop_margin < 0:
            raise ValueError("faces: need every_s > 0, margin_s >= 0, short_side >= 32, crop_margin >= 0")

    @property
    def backend_config(self) -> InsightFaceConfig | DlibConfig:
        return self.insightface if self.backend == "insightface" else self.dlib

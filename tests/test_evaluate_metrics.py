"""Evaluation metrics on constructed inputs with known answers (tiny models, dlib's real weights)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from curation import synthetic
from curation.faces.synthetic import astronaut, face_window, tom_hanks
from curation.pairs.backgrounds import remove_subjects
from model.evaluate.base import MetricUnavailable
from model.evaluate.dino import tiny_dino
from model.evaluate.entries import FACE, OBJECT, Entry, Reference
from model.evaluate.faces import IdentitySimilarity
from model.evaluate.motion import motion_fb, motion_lk, motion_smoothness
from model.evaluate.scorer import EvaluateConfig, Evaluator, build_metrics
from model.evaluate.subjects import (
    BACKGROUND_CONFIG,
    BackgroundSimilarity,
    NexusScore,
    SubjectSimilarity,
    background_similarity,
    nexus_score,
    subject_similarity,
)
from model.evaluate.video import read_video

H, W = 96, 128


def rows_by_metric(rows):
    return {r["metric"]: r for r in rows}


@pytest.fixture(scope="module")
def dlib_id_sim():
    return IdentitySimilarity("tiny", "cpu", backend="dlib")


def test_id_sim_same_face_near_one_other_person_lower(dlib_id_sim, tmp_path):
    ref = face_window(astronaut(), (256, 256))
    synthetic.write_video(tmp_path / "same.mp4", [ref] * 5)
    synthetic.write_video(tmp_path / "other.mp4", [face_window(tom_hanks(), (256, 256))] * 5)
    synthetic.write_video(tmp_path / "noface.mp4", [np.full((256, 256, 3), 90, np.uint8)] * 5)
    evaluator = Evaluator(EvaluateConfig(metrics=["id_sim"], frames=3), metrics=[dlib_id_sim])
    scores = {}
    for name in ("same", "other", "noface"):
        rows = evaluator.evaluate(Entry(name, "a face", tmp_path / f"{name}.mp4", [Reference(ref, "woman", FACE)]))
        scores[name] = rows_by_metric(rows)["id_sim"]
    assert scores["same"]["status"] == "kept" and scores["same"]["value"] > 0.98
    assert scores["other"]["value"] < scores["same"]["value"] - 0.08
    assert scores["noface"]["status"] == "no_face_in_video" and scores["noface"]["value"] is None
    assert "face_dlib=" in scores["same"]["model"]


def test_still_video_has_no_motion_and_is_perfectly_smooth(tmp_path):
    still = np.stack([next(iter(synthetic.scene_frames(1, [], height=H, width=W)))] * 9)
    assert motion_fb(still) == 0.0 and motion_lk(still) == 0.0 and motion_smoothness(still) == 1.0
    synthetic.write_video(tmp_path / "still.mp4", list(still))
    encoded = read_video(tmp_path / "still.mp4").small
    assert motion_fb(encoded) == pytest.approx(0, abs=0.05) and motion_smoothness(encoded) > 0.995
    moving = read_video(synthetic.moving_video(tmp_path / "moving.mp4", seconds=1.0)).small
    assert motion_fb(moving) > max(0.1, 4 * motion_fb(encoded)) and motion_lk(moving) > 0.1


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3)).astype(np.uint8), (0, 0), 3)
    thing = cv2.resize(data.astronaut()[60:200, 170:290], (40, 40))
    mask = np.zeros((H, W), bool)
    mask[20:60, 30:70] = True
    with_thing = background.copy()
    with_thing[mask] = thing.reshape(-1, 3)
    return {"background": background, "thing": thing, "mask": mask, "with_thing": with_thing}


def test_subject_and_background_similarity_with_known_regions(scene):
    dino = tiny_dino("cpu")
    ref = Reference(scene["thing"], "thing", OBJECT)
    regions = [{"thing": scene["mask"]}] * 4
    shown = subject_similarity(dino, [ref], [scene["with_thing"]] * 4, regions)
    absent = subject_similarity(dino, [ref], [scene["background"]] * 4, regions)
    assert shown > 0.99 and shown > absent + 0.05
    assert subject_similarity(dino, [ref], [scene["with_thing"]] * 4, [{}] * 4) == 0.0  # never found: 0
    other = np.full((H, W, 3), (30, 120, 200), np.uint8)
    same_bg = background_similarity(dino, scene["background"], [scene["with_thing"]] * 4, regions)
    other_bg = background_similarity(dino, scene["background"], [other] * 4, [{}] * 4)
    assert same_bg > 0.98 and same_bg > other_bg + 0.05


def test_metric_classes_take_supplied_regions_and_score_through_the_evaluator(scene, tmp_path):
    synthetic.write_video(tmp_path / "v.mp4", [scene["with_thing"]] * 4)
    supplied = lambda frames, labels: [{"thing": scene["mask"]} for _ in frames]
    metrics = [SubjectSimilarity("tiny", "cpu", regions=supplied), BackgroundSimilarity("tiny", "cpu", regions=supplied),
               NexusScore("tiny", "cpu", regions=supplied)]
    entry = Entry("v", "a thing", tmp_path / "v.mp4", [Reference(scene["thing"], "thing", OBJECT),
                                                         Reference(scene["background"], None, "background")])
    rows = rows_by_metric(Evaluator(EvaluateConfig(frames=3), metrics=metrics).evaluate(entry))
    assert rows["subj_sim"]["value"] > 0.95 and rows["bg_sim"]["value"] > 0.95
    assert rows["subj_sim"]["model"] == "dino=tiny"
    # NexusScore in OpenS2V's form: the thing on all 3 sampled frames -> its crop cosine / 32 (their 32 frames)
    assert rows["nexus_similarity"]["value"] > 0.95
    assert rows["nexus_score"]["value"] == pytest.approx(rows["nexus_similarity"]["value"] / 32)


def test_nexus_score_divides_by_frames_with_a_detection_at_their_32_frames():
    assert nexus_score([0.6, 0.8, 0.0], frames_with_detection=4, sampled=8) == pytest.approx(0.7 / 16)
    assert nexus_score([0.5], frames_with_detection=32, sampled=32) == pytest.approx(0.5 / 32)
    assert nexus_score([], 0, 8) == 0.0 and nexus_score([0.0], 1, 8) == 0.0


def test_grounding_and_sam2_find_regions_end_to_end_smoke(scene, tmp_path):
    """Tiny GroundingDINO/SAM2 find nothing meaningful: this only shows the real path runs."""
    synthetic.write_video(tmp_path / "v.mp4", [scene["with_thing"]] * 3)
    metric, background = build_metrics(EvaluateConfig(metrics=["subj_sim", "bg_sim"]), "tiny", "cpu")
    assert metric.model_ids == "dino=tiny,grounding=tiny,segmenter=tiny"
    assert background.regions is metric.regions and background.dino is metric.dino  # detectors load once
    value = metric.score(Entry("v", "", tmp_path / "v.mp4", [Reference(scene["thing"], "thing", OBJECT)]),
                         read_video(tmp_path / "v.mp4", 2))["subj_sim"]
    assert -1.0 <= value <= 1.0


def test_broken_entries_say_why_and_unavailable_metric_is_one_line(tmp_path, scene):
    lines = []
    metrics = build_metrics(EvaluateConfig(metrics=["motion", "facesim_cur"]),
                            {"*": "tiny", "curricularface": str(tmp_path / "none.bin")}, "cpu", say=lines.append)
    assert [m.name for m in metrics] == ["motion"]
    assert len(lines) == 1 and "'curricularface'" in lines[0] and "--models curricularface=" in lines[0]
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    evaluator = Evaluator(EvaluateConfig(metrics=["motion"]), metrics=metrics)
    missing = evaluator.evaluate(Entry("m", "", tmp_path / "nothing.mp4", []))
    broken = evaluator.evaluate(Entry("b", "", tmp_path / "bad.mp4", []))
    bad_ref = evaluator.evaluate(Entry("r", "", tmp_path / "nothing.mp4", [], error="reference 'x.png' does not exist"))
    assert {r["status"] for r in missing} == {"no_video"} and len(missing) == 3
    assert {r["status"] for r in broken} == {"unreadable_video"} and "bad.mp4" in broken[0]["detail"]
    assert {r["status"] for r in bad_ref} == {"bad_reference"} and "x.png" in bad_ref[0]["detail"]
    with pytest.raises(MetricUnavailable, match="unknown face backend"):
        IdentitySimilarity("tiny", "cpu", backend="nope")


def test_bg_sim_can_remove_subjects_with_the_inpainter_as_stage_4_does(scene, tmp_path):
    """``evaluate.bg_inpaint=model``: the inpainter role fills the subject (tiny here: random
    weights, so the fill is noise), the pixels away from the hole stay the frame's."""
    with pytest.raises(ValueError, match="bg_inpaint"):
        EvaluateConfig(bg_inpaint="sdxl")
    supplied = lambda frames, labels: [{"thing": scene["mask"]} for _ in frames]
    metric = BackgroundSimilarity("tiny", "cpu", regions=supplied, inpaint="model")
    assert metric.model_ids == "dino=tiny,inpainter=tiny" and metric.inpainter is not None
    hole = scene["mask"].astype(np.uint8) * 255
    cleaned = remove_subjects(scene["with_thing"], hole, BACKGROUND_CONFIG, metric.inpainter)
    far = ~cv2.dilate(hole, np.ones((15, 15), np.uint8)).astype(bool)
    assert np.array_equal(cleaned[far], scene["with_thing"][far])
    assert not np.array_equal(cleaned[scene["mask"]], scene["with_thing"][scene["mask"]])
    telea = remove_subjects(scene["with_thing"], hole, BACKGROUND_CONFIG, None)
    assert not np.array_equal(cleaned[scene["mask"]], telea[scene["mask"]])  # the inpainter filled it, not Telea
    synthetic.write_video(tmp_path / "v.mp4", [scene["with_thing"]] * 2)
    entry = Entry("v", "", tmp_path / "v.mp4", [Reference(scene["thing"], "thing", OBJECT),
                                                Reference(scene["background"], None, "background")])
    value = metric.score(entry, read_video(tmp_path / "v.mp4", 2))["bg_sim"]
    assert -1.0 <= value <= 1.0

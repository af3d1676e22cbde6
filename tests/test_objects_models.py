"""Stage 2's model steps with tiny random models: labels, GroundingDINO boxes, SAM2 masks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.models import load
from curation.objects.grounding import (
    FACE_QUERY,
    Detection,
    GroundingConfig,
    GroundingModel,
    detect,
    model_size,
    query_of,
    select,
    token_positions,
)
from curation.objects.labels import (
    LABELS,
    Labeler,
    LabelsConfig,
    MalformedLabelAnswer,
    normalise_labels,
    parse_label_answer,
    singular,
)
from curation.objects.segment import SegmentConfig, SegmentModel, pack_mask, segment_boxes, unpack_mask
from schemas.tables import ERROR, ERROR_MESSAGE, ERROR_TYPE, INPUT

# --------------------------------------------------------------------------- labels

@pytest.mark.parametrize("plural, single", [
    ("dogs", "dog"), ("men", "man"), ("women", "woman"), ("people", "person"), ("puppies", "puppy"),
    ("boxes", "box"), ("watches", "watch"), ("dishes", "dish"), ("glasses", "glasses"), ("bus", "bus"),
    ("buses", "bus"), ("dress", "dress"), ("knives", "knife"), ("movies", "movie"), ("tomatoes", "tomato"),
    ("shoes", "shoe"), ("cactus", "cactus"), ("cat", "cat"), ("horses", "horse"), ("children", "child"),
    ("geese", "goose"), ("mice", "mouse"), ("jeans", "jeans"), ("trousers", "trousers"), ("scissors", "scissors"),
    ("policemen", "policeman"), ("lens", "lens")])
def test_singular(plural, single):
    assert singular(plural) == single


def test_normalise_labels():
    words = ["Two Dogs", "the woman", "dog", "red cars", "camera", "", None, "a man", "Woman.", "a b c d e",
             "x" * 60, "3 cups", "bird"]
    assert normalise_labels(words, 8) == ["dog", "woman", "red car", "man", "bird"]
    assert normalise_labels(words, 2) == ["dog", "woman"]
    assert normalise_labels(None, 8) == [] and normalise_labels([], 8) == []


def test_extra_labels_follow_a_clips_own_within_the_limit():
    from curation.objects.labels import clip_labels

    assert clip_labels({"subjects": ["Dogs", "a ball"]}, 8, ["balls", "box"]) == ["dog", "ball", "box"]
    assert clip_labels({"subjects": []}, 8, ["ball", "box"]) == ["ball", "box"]  # a clip without subjects
    assert clip_labels({LABELS: ["cat"], "subjects": ["dog"]}, 2, ["box", "cup"]) == ["cat", "box"]
    assert clip_labels({"subjects": ["dog"]}, 8) == ["dog"]


def test_parse_label_answer():
    assert parse_label_answer('["woman", "dog"]', "c1") == ["woman", "dog"]
    assert parse_label_answer('```json\n["red car"]\n```', "c1") == ["red car"]
    assert parse_label_answer('Sure: ["cup"] is all.', "c1") == ["cup"]
    assert parse_label_answer("[]", "c1") == []
    for bad in ("a woman and a dog", '{"labels": "dog"}', "[1, 2]", '["dog",', "", None):
        with pytest.raises(MalformedLabelAnswer, match="clip c7"):
            parse_label_answer(bad, "c7")


def clip_rows(subjects, captions):
    ids = [f"clip{i}" for i in range(len(subjects))]
    return pa.table({INPUT: ids, "clip_id": ids, "subjects": pa.array(subjects, pa.list_(pa.string())),
                     "caption": captions, "status": [None] * len(ids)})


def test_labeler_uses_subjects_without_a_model_call():
    labeler = Labeler(LabelsConfig(from_caption=True), models="tiny")
    out = labeler(clip_rows([["Dogs", "a man"], ["cat"]], ["Dogs play.", "A cat."]))
    assert out.column(LABELS).to_pylist() == [["dog", "man"], ["cat"]]
    assert labeler.generate_calls == 0


def test_a_malformed_label_answer_is_that_clips_error_row():
    labeler = Labeler(LabelsConfig(from_caption=True, max_new_tokens=12), models="tiny")
    batch = clip_rows([["dog"], [], None], ["A dog runs.", "A woman walks her dog in the park.", ""])
    out = labeler(batch)
    rows = {r[INPUT]: r for r in out.to_pylist()}
    assert labeler.generate_calls == 1  # only clip1 had no subjects and a caption
    # The tiny random model does not write JSON: clip1 is an error row that names it.
    assert rows["clip1"]["status"] == ERROR and rows["clip1"][ERROR_TYPE] == "MalformedLabelAnswer"
    assert "clip clip1" in rows["clip1"][ERROR_MESSAGE]
    assert rows["clip0"][LABELS] == ["dog"] and rows["clip0"]["status"] is None
    assert rows["clip2"][LABELS] == [] and rows["clip2"]["status"] is None  # no caption: nothing to ask


# --------------------------------------------------------------------------- grounding

@pytest.fixture(scope="module")
def grounding() -> GroundingModel:
    return load("grounding", "tiny", device="cpu")


@pytest.fixture(scope="module")
def segmenter() -> SegmentModel:
    return load("segmenter", "tiny", device="cpu")


def test_the_query_holds_every_label_once_and_each_label_finds_its_tokens(grounding):
    text, names, spans = query_of(["man", "red car", FACE_QUERY], FACE_QUERY)
    assert text == "man. red car. human face." and names == ["man", "red car", FACE_QUERY]
    encoded = grounding.tokenizer([text], return_offsets_mapping=True)
    positions = token_positions(encoded["offset_mapping"][0], spans)
    ids = encoded["input_ids"][0]
    assert [grounding.tokenizer.decode([ids[p] for p in pos]) for pos in positions] == names
    assert ids[0] == 101 and ids[-1] == 102 and ids.count(1012) == 3  # BERT's ids GroundingDINO relies on


def test_detect_returns_boxes_inside_each_image_for_the_querys_labels(grounding):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), rng.integers(0, 256, (72, 160, 3), dtype=np.uint8)]
    queries = [query_of(["dog", "cup"], FACE_QUERY)[1:] + (query_of(["dog", "cup"], FACE_QUERY)[0],),
               query_of(["bird"], FACE_QUERY)[1:] + (query_of(["bird"], FACE_QUERY)[0],)]
    found = detect(grounding, images, queries, GroundingConfig(box_threshold=0.3, text_threshold=0.2))
    assert len(found) == 2 and all(found)
    for image, dets, (names, _, _) in zip(images, found, queries):
        height, width = image.shape[:2]
        for d in dets:
            assert d.label in names and 0.3 < d.score <= 1
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    # One image per forward gives the same detections as both in one padded batch.
    alone = detect(grounding, images, queries, GroundingConfig(box_threshold=0.3, text_threshold=0.2,
                                                               images_per_forward=1))
    assert [[(d.label, round(d.score, 4)) for d in x] for x in alone] == \
        [[(d.label, round(d.score, 4)) for d in x] for x in found]
    assert detect(grounding, images, queries, GroundingConfig(box_threshold=1.0)) == [[], []]


def test_model_size_follows_detrs_rule():
    assert model_size(720, 1280, 800, 1333) == (750, 1333)
    assert model_size(480, 640, 800, 1333) == (800, 1067)


def det(label, score, box=(0, 0, 10, 10)):
    return Detection(label, -1, score, box)


def test_select_keeps_the_best_frame_per_label_and_faces_on_used_frames():
    per_frame = [
        [det("dog", 0.9), det(FACE_QUERY, 0.8)],  # one dog, well seen
        [det("dog", 0.7), det("dog", 0.6), det("cup", 0.5), det(FACE_QUERY, 0.9), det(FACE_QUERY, 0.4)],  # both dogs
        [det("cup", 0.95), det("cup", 0.4), det("cup", 0.3), det(FACE_QUERY, 0.7)],
    ]
    chosen = select(per_frame, ["dog", "cup", "cat"], GroundingConfig(max_instances=2, max_faces=1))
    assert [(d.label, d.frame, d.score, d.face) for d in chosen] == [
        ("dog", 1, 0.7, False), ("dog", 1, 0.6, False),
        ("cup", 2, 0.95, False), ("cup", 2, 0.4, False),
        (FACE_QUERY, 1, 0.9, True), (FACE_QUERY, 2, 0.7, True)]
    assert select([[], []], ["dog"], GroundingConfig()) == []


# --------------------------------------------------------------------------- segmentation

def test_sam2_masks_one_per_box_at_image_size_and_batching_does_not_change_them(segmenter):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), rng.integers(0, 256, (50, 70, 3), dtype=np.uint8),
              rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)]
    boxes = [np.array([[10, 10, 60, 50], [0, 0, 128, 96], [70, 20, 120, 90]]), np.zeros((0, 4)),
             np.array([[5, 5, 40, 60]])]
    masks = segment_boxes(segmenter, images, boxes, SegmentConfig())
    assert [m.shape for m in masks] == [(3, 96, 128), (0, 50, 70), (1, 64, 64)]
    assert all(m.dtype == bool for m in masks)
    one_by_one = segment_boxes(segmenter, images, boxes, SegmentConfig(images_per_forward=1, boxes_per_forward=1))
    for a, b in zip(masks, one_by_one):
        assert a.shape == b.shape and (a != b).sum() <= 1e-3 * a.size  # float order of a batched matmul may flip a border pixel, no more
    assert not np.array_equal(masks[0][0], masks[0][1])  # each box gets its own mask


def test_packed_masks_round_trip():
    mask = np.random.default_rng(2).random((37, 53)) < 0.4
    assert np.array_equal(unpack_mask(pack_mask(mask), 37, 53), mask)
    assert len(pack_mask(mask)) == (37 * 53 + 7) // 8

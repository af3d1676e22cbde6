"""Stage 2's operators chained in one process on generated clips, as the job wires them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from stage2_media import make_clips

from curation.frames import FRAMES, FrameReader
from curation.images import decode_png
from curation.objects.filters import FilterConfig
from curation.objects.grounding import DETECTIONS, Grounder, GroundingConfig, keyframe_request
from curation.objects.morphology import MorphologyConfig
from curation.objects.references import ObjectReferences, ReferencesConfig
from curation.objects.segment import MASKS, SegmentConfig, Segmenter
from schemas.tables import EMPTY, ERROR, ERROR_MESSAGE, INPUT, KEPT, OBJECTS
from schemas.validate import validate

STATUSES = {KEPT, "too_small", "irregular", "overlaps_face", "duplicate"}


@pytest.fixture(scope="module")
def steps():
    grounding = GroundingConfig(keyframes=3, box_threshold=0.3, text_threshold=0.2)
    return (FrameReader(keyframe_request(grounding)), Grounder(grounding, models="tiny", device="cpu"),
            Segmenter(SegmentConfig(boxes_per_forward=5), models="tiny", device="cpu"),
            ObjectReferences(ReferencesConfig(), MorphologyConfig(), FilterConfig(theta_min=0.001)))


def run_chain(steps, batch):
    for step in steps:
        batch = step(batch)
    return batch


def test_the_chain_turns_clips_into_valid_object_rows(tmp_path, steps):
    clips = make_clips(tmp_path, videos=2, clips_per_video=2)
    kept = clips.filter(pc.equal(clips.column("status"), "kept"))
    rows = kept.to_pylist()
    rows[0]["subjects"] = []  # nothing to look for: processed, no objects
    rows[1]["uri"] = str(tmp_path / "gone.mp4")  # its frames do not decode: that clip's error
    batch = pa.Table.from_pylist(rows, schema=kept.schema)
    batch = batch.append_column(INPUT, batch.column("clip_id"))

    with_boxes = run_chain(steps[:2], batch)
    assert FRAMES in with_boxes.column_names and DETECTIONS in with_boxes.column_names
    out = run_chain(steps, batch)
    assert FRAMES not in out.column_names and MASKS not in out.column_names

    by_status = {s: out.filter(pc.equal(out.column("status"), s)) for s in (EMPTY, ERROR)}
    assert by_status[EMPTY].column(INPUT).to_pylist() == [rows[0]["clip_id"]]
    assert by_status[ERROR].column(INPUT).to_pylist() == [rows[1]["clip_id"]]
    assert "gone.mp4" in by_status[ERROR].column(ERROR_MESSAGE)[0].as_py()

    objects = out.filter(pc.invert(pc.is_in(out.column("status"), pa.array([EMPTY, ERROR]))))
    objects = validate(objects.select(OBJECTS.names), "objects", source="chain output")
    live = {r["clip_id"]: r for r in rows[2:]}
    assert objects.num_rows and set(objects.column("clip_id").to_pylist()) <= set(live)
    assert set(objects.column(INPUT if INPUT in objects.column_names else "clip_id").to_pylist()) <= set(live)
    assert len(set(objects.column("object_id").to_pylist())) == objects.num_rows
    for obj in objects.to_pylist():
        clip = live[obj["clip_id"]]
        assert obj["object_id"].startswith(obj["clip_id"] + "-o")
        assert obj["status"] in STATUSES and obj["label"] in ("red ball", "blue box", "man")
        assert clip["start_frame"] <= obj["frame"] < clip["end_frame"]
        x, y, w, h = obj["box"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0
        assert x + w <= clip["width"] + 1e-3 and y + h <= clip["height"] + 1e-3
        assert 0 <= obj["face_iou"] <= 1 and 0 <= obj["solidity"] <= 1
        if obj["area"]:
            mask = decode_png(obj["mask"]) > 0
            ref = decode_png(obj["ref"])
            assert mask.shape == (clip["height"], clip["width"]) and mask.sum() == obj["area"]
            assert ref.shape[2] == 4 and (ref[..., 3] > 0).sum() == obj["area"]


def test_an_input_that_fails_in_a_model_step_settles_only_itself(tmp_path, steps):
    clips = make_clips(tmp_path, videos=1, clips_per_video=2)
    batch = clips.append_column(INPUT, clips.column("clip_id"))
    read = steps[0](batch)
    frames = read.column(FRAMES).to_pylist()
    frames[0] = b"not frames"  # a corrupt frames blob: the grounder raises for this clip alone
    broken = read.set_column(read.column_names.index(FRAMES), FRAMES, pa.array(frames, pa.binary()))
    out = run_chain(steps[1:], broken)
    errors = out.filter(pc.equal(out.column("status"), ERROR))
    assert errors.column(INPUT).to_pylist() == [clips.column("clip_id")[0].as_py()]
    others = out.filter(pc.equal(out.column(INPUT), clips.column("clip_id")[1].as_py()))
    alone = run_chain(steps[1:], read.slice(1, 1))
    assert others.column("object_id").to_pylist() == alone.column("object_id").to_pylist()
    assert np.array_equal(others.column("area").to_numpy(), alone.column("area").to_numpy())

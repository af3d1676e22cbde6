"""Backgrounds I^Bg: keyframe choice, subject-mask union, inpainting (OpenCV and tiny SDXL), augmentation."""

import json

import numpy as np
import pytest
from pairs_data import clip_row, face_row, object_row, people

from curation.envelope import to_table
from curation.frames import FRAMES
from curation.images import decode_png, encode_png
from curation.pairs.backgrounds import (
    SUBJECTS,
    TOO_MASKED,
    BackgroundConfig,
    BackgroundFrames,
    Backgrounds,
    augment,
    choose_keyframe,
    composite,
    dilate,
    inpaint_opencv,
    subject_mask,
    work_size,
)
from curation.pairs.requests import requests_for_clip
from curation.synthetic import write_video
from schemas.tables import INPUT

W, H = 128, 96
SQUARE = (70, 30, 24, 24)  # x, y, w, h of the red subject in every frame


def gradient() -> np.ndarray:
    """A smooth scene: horizontal blue-green gradient, easy to fill back in."""
    xs = np.linspace(0, 1, W)[None, :, None]
    scene = np.concatenate([np.full((H, W, 1), 60.0), 80 + 120 * np.repeat(xs, H, 0), 200 - 60 * np.repeat(xs, H, 0)], 2)
    return scene.astype(np.uint8)


@pytest.fixture(scope="module")
def subject_video(tmp_path_factory):
    frame = gradient()
    x, y, w, h = SQUARE
    frame[y:y + h, x:x + w] = (230, 20, 20)
    path = tmp_path_factory.mktemp("bg") / "square.mp4"
    return write_video(path, [frame] * 24, codec="libx264")


def background_request(video, **config) -> tuple[dict, list]:
    clip = clip_row(start=0, end=24, uri=str(video), width=W, height=H, fps=24.0)
    objects = [object_row(clip, 0, "ball", SQUARE, 0.8, frame=12)]
    rows = requests_for_clip(clip, [], objects, variants=False)
    assert [r["kind"] for r in rows] == ["background"]
    return clip, rows


def test_keyframe_is_where_most_subjects_were_seen():
    subjects = [{"frame": 5}, {"frame": 9}, {"frame": 9}, {"frame": 30}, {"frame": 30}, {"frame": 30}]
    assert choose_keyframe(subjects, 0, 20) == 9  # frame 30 lies outside the clip
    assert choose_keyframe([{"frame": 2}, {"frame": 17}], 0, 20) == 2  # tie: nearest the middle (9.5)
    assert choose_keyframe([], 10, 20) == 14


def test_mask_is_the_union_of_objects_and_grown_keyframe_faces():
    full = np.zeros((H, W), np.uint8)
    full[10:20, 10:30] = 255
    boxed = np.full((8, 8), 255, np.uint8)  # a box-sized mask is fitted into its box
    half = np.zeros((H // 2, W // 2), np.uint8)  # full frame at half resolution (stage 2 decodes small)
    half[40:44, 0:4] = 255
    subjects = [
        {"kind": "object", "frame": 3, "box": [10, 10, 20, 10], "mask": encode_png(full)},
        {"kind": "object", "frame": 7, "box": [100, 60, 16, 16], "mask": encode_png(boxed)},
        {"kind": "object", "frame": 7, "box": [0, 80, 8, 8], "mask": encode_png(half)},
        {"kind": "face", "frame": 3, "box": [50, 50, 10, 10], "mask": None},
        {"kind": "face", "frame": 4, "box": [0, 80, 10, 10], "mask": None},  # another frame: not at the keyframe
    ]
    mask = subject_mask(W, H, subjects, keyframe=3, face_margin=0.5)
    expected = np.zeros((H, W), np.uint8)
    expected[10:20, 10:30] = 255
    expected[60:76, 100:116] = 255
    expected[45:65, 45:65] = 255  # 10 px face grown by 5 px each side
    expected[80:88, 0:8] = 255
    assert np.array_equal(mask, expected)
    grown = dilate(mask, 0.02)
    assert grown[mask > 0].min() == 255 and (grown > 0).sum() > (mask > 0).sum()


def test_opencv_inpainting_removes_the_subject_and_keeps_the_rest():
    scene = gradient()
    frame = scene.copy()
    x, y, w, h = SQUARE
    frame[y:y + h, x:x + w] = (230, 20, 20)
    mask = np.zeros((H, W), np.uint8)
    mask[y:y + h, x:x + w] = 255
    mask = dilate(mask, 0.02)
    filled = composite(frame, inpaint_opencv(frame, mask), mask)
    region = filled[y:y + h, x:x + w].astype(float)
    assert np.abs(region - scene[y:y + h, x:x + w]).mean() < 12  # the gradient is back
    assert region[..., 0].mean() < 100  # no red left
    far = np.ones((H, W), bool)
    far[y - 12:y + h + 12, x - 12:x + w + 12] = False
    assert np.array_equal(filled[far], frame[far])  # outside the mask and its feather: untouched


def test_augmentation_is_seeded_and_recorded():
    image = gradient()
    config = BackgroundConfig(flip=1.0, crop=0.8, jitter=0.1)
    a, params = augment(image, 5, config)
    b, again = augment(image, 5, config)
    assert np.array_equal(a, b) and params == again and params["flip"] is True
    x0, y0, cw, ch = params["crop_xywh"]
    assert a.shape == (ch, cw, 3) and 0.8 * W - 1 <= cw <= W
    c, other = augment(image, 6, config)
    assert other != params
    plain, _ = augment(image, 5, BackgroundConfig(flip=0.0, crop=1.0, jitter=0.0))
    assert np.array_equal(plain, image)


def test_work_size_fits_and_rounds():
    assert work_size(1920, 1080, 1024, 16) == (1024, 576)
    assert work_size(100, 60, 1024, 16) == (96, 64)  # never scaled up, only rounded


def test_background_from_video_with_opencv(subject_video):
    _, rows = background_request(subject_video)
    config = BackgroundConfig(backend="opencv", max_side=128)
    prepared = BackgroundFrames(config)(to_table(rows))
    assert FRAMES in prepared.column_names and prepared.column("frame").to_pylist() == [12]
    mask = decode_png(prepared.column("mask")[0].as_py())
    x, y, w, h = SQUARE
    assert mask[y:y + h, x:x + w].min() == 255 and (mask > 0).mean() < 0.2
    out = Backgrounds(config)(prepared)
    assert FRAMES not in out.column_names
    row = out.to_pylist()[0]
    params = json.loads(row["params"])
    assert row["status"] == "kept" and row["model"] == "opencv" and params["augment"]["crop_xywh"]
    image = decode_png(row["image"])
    assert image[..., 0].max() < 150  # the red square is gone, wherever the crop/flip put things
    again = Backgrounds(config)(BackgroundFrames(config)(to_table(rows))).to_pylist()[0]
    assert again["image"] == row["image"]


def test_background_with_the_tiny_sdxl_inpainter(subject_video):
    _, rows = background_request(subject_video)
    config = BackgroundConfig(backend="model", max_side=64, steps=2, crop=1.0, flip=0.0, jitter=0.0)
    out = Backgrounds(config, models="tiny", device="cpu")(BackgroundFrames(config)(to_table(rows))).to_pylist()[0]
    assert out["status"] == "kept" and out["model"] == "tiny" and out["prompt"] == config.prompt
    image = decode_png(out["image"])
    assert image.shape == (48, 64, 3)  # 128x96 fitted to 64, multiples of 16
    assert json.loads(out["params"])["steps"] == 2


def test_a_frame_covered_by_subjects_is_too_masked(subject_video):
    clip, _ = background_request(subject_video)
    objects = [object_row(clip, 0, "wall", (0, 0, W, H), 0.9, frame=12)]
    rows = requests_for_clip(clip, [], objects, variants=False)
    config = BackgroundConfig(backend="opencv", max_side=128, max_masked=0.8)
    row = Backgrounds(config)(BackgroundFrames(config)(to_table(rows))).to_pylist()[0]
    assert row["status"] == TOO_MASKED and row["image"] is None and json.loads(row["params"])["masked"] > 0.8


def test_a_missing_video_settles_only_its_clip(subject_video, tmp_path):
    _, rows = background_request(subject_video)
    clip, broken = background_request(tmp_path / "gone.mp4")
    broken[0].update({INPUT: "other", "clip_id": "other"})
    out = BackgroundFrames(BackgroundConfig(backend="opencv"))(to_table(rows + broken)).to_pylist()
    assert [r["status"] for r in out] == ["kept", "_error"] and out[1][INPUT] == "other"


def test_requests_reserve_the_background_cell_and_pick_by_score():
    clip = clip_row()
    objects = [object_row(clip, i, f"thing{i}", (i, i, 5, 5), score=0.1 * i) for i in range(9)]
    objects.append(object_row(clip, 9, "tiny", (0, 0, 2, 2), 0.99, status="too_small"))
    faces = [face_row(clip, 0, "id0", people(1)[0], det_score=0.55), face_row(clip, 1, "id0", people(1)[0], rank=3)]
    rows = requests_for_clip(clip, faces, objects)
    kinds = [r["kind"] for r in rows]
    assert kinds.count("background") == 1 and len(rows) == 8  # 7 references + the background
    chosen = {r["source_id"] for r in rows if r["kind"] == "object"}
    assert chosen == {objects[i]["object_id"] for i in range(3, 9)}  # the six best kept objects
    assert [r["source_id"] for r in rows if r["kind"] == "face"] == [faces[0]["face_id"]]  # best rank of id0
    subjects = next(r for r in rows if r["kind"] == "background")[SUBJECTS]
    assert len(subjects) == 12  # every object (filtered ones too) and every face is a subject to remove
    everything = requests_for_clip(clip, faces, objects, scope="all")
    assert sum(r["kind"] == "object" for r in everything) == 9 and sum(r["kind"] == "face" for r in everything) == 2
    assert requests_for_clip(clip, [], [objects[9]]) == []  # no usable reference: nothing to make


def test_the_keyframe_is_read_by_number_on_variable_frame_rate_video(tmp_path):
    """Stages 2-3 record frame numbers; on VFR video a number -> time conversion at the
    nominal rate lands on another frame, so the background must read the frame by number."""
    import av

    from curation.frames import decode_frames
    from curation.synthetic import vfr_video

    durations = [40, 40, 20, 60, 33, 100, 10, 40, 25, 75] * 3  # 30 frames, irregular
    video = vfr_video(tmp_path / "vfr.mp4", durations, height=H, width=W)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        times = [float((f.pts - (stream.start_time or 0)) * stream.time_base) for f in container.decode(stream)]
        container.seek(0)
        images = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    nominal = 30 / (times[-1] + 0.075)

    def by_rate(number: int) -> int:  # the frame on screen at number / nominal rate
        return max(n for n in range(30) if times[n] <= number / nominal + 1e-9)

    keyframe = next(k for k in range(5, 25) if by_rate(k) != k)  # the rate arithmetic misses it
    clip = clip_row(start=0, end=30, uri=str(video), width=W, height=H, fps=nominal)
    clip["end_s"] = times[-1] + 0.075
    objects = [object_row(clip, 0, "ball", SQUARE, 0.8, frame=keyframe)]
    rows = requests_for_clip(clip, [], objects, variants=False)
    prepared = BackgroundFrames(BackgroundConfig(backend="opencv", max_side=W))(to_table(rows))
    assert prepared.column("frame").to_pylist() == [keyframe]
    got = decode_frames(prepared.column(FRAMES)[0].as_py())
    assert got.indices.tolist() == [keyframe] and np.array_equal(got.images[0], images[keyframe])


def test_faces_from_neighbouring_segments_do_not_mask_the_background(subject_video):
    """Stage 3 also searches the seconds around a clip; those faces were on other frames, so
    they must neither vote for the keyframe nor cut a hole in the background."""
    clip = clip_row(start=0, end=24, uri=str(subject_video), width=W, height=H, fps=24.0)
    embedding = np.ones(8, np.float32)
    own = face_row(clip, 0, "id0", embedding, box=(10, 10, 20, 20), frame=6)
    neighbours = [{**face_row(clip, i, "id0", embedding, box=(90, 50, 20, 20), frame=18), "segment": segment}
                  for i, segment in ((1, "before"), (2, "after"), (3, "before"))]
    background = [r for r in requests_for_clip(clip, [own, *neighbours], [], variants=False)
                  if r["kind"] == "background"]
    assert len(background) == 1
    subjects = background[0][SUBJECTS]
    assert [(s["kind"], s["frame"]) for s in subjects] == [("face", 6)]
    prepared = BackgroundFrames(BackgroundConfig(backend="opencv", max_side=W))(to_table(background))
    assert prepared.column("frame").to_pylist() == [6]  # three neighbour faces at 18 would win the vote
    mask = decode_png(prepared.column("mask")[0].as_py())
    assert mask[55:65, 95:105].max() == 0 and mask[15:25, 15:25].min() == 255

"""Stage 3 as a Ray Data job on generated face videos: InsightFace (generated pack) and dlib end to end,
neighbouring segments, clips without faces, and a clip whose frames do not decode."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from curation.envelope import to_table
from curation.faces import synthetic
from curation.images import decode_png
from curation.video import probe_video
from pipelines.ledger import RunDir, commit
from schemas.ids import clip_id
from schemas.tables import CLIPS, INPUT, VIDEOS
from schemas.validate import validate

pytestmark = pytest.mark.slow
FPS = synthetic.FPS
STATUSES = {"kept", "pose", "blur", "low_quality", "occluded", "not_in_clip"}


def make_run(run, clips: list[tuple[str, int, int, str]], crops: dict[int, list[float]] | None = None) -> dict[str, str]:
    """A run dir with a videos table (probed) and a clips table of (uri, start, end, status) rows;
    ``crops``: {clip's position: its crop (x, y, w, h)}."""
    videos = {}
    for uri, *_ in clips:
        if uri not in videos:
            videos[uri] = {**probe_video(uri), INPUT: uri}
    commit(to_table(list(videos.values()), VIDEOS), str(run), "probe", "videos")
    rows, ids = [], {}
    for uri, start, end, status in clips:
        video = videos[uri]
        cid = clip_id(video["video_id"], start, end)
        ids[f"{uri}:{start}"] = cid
        rows.append({"clip_id": cid, "video_id": video["video_id"], "uri": uri, "start_frame": start,
                     "end_frame": end, "start_s": start / FPS, "end_s": end / FPS, "fps": float(FPS),
                     "width": video["width"], "height": video["height"], "status": status,
                     "caption": "a person", "subjects": ["person"], INPUT: video["video_id"],
                     "crop": (crops or {}).get(len(rows))})
    commit(to_table(rows, CLIPS), str(run), "clips", "clips")
    return ids


def stage3(run, *sets: str, models: str = "tiny") -> int:
    from pipelines.stage3_faces import main

    args = ["--run-dir", str(run), "--models", models, "--set", "faces.pool.num_cpus=0.5"]
    for item in sets:
        args += ["--set", item]
    return main(args)


def faces_of(run):
    table = RunDir.of(str(run)).read("faces")
    return validate(table, "faces", source=str(run)), table.to_pylist()


def test_insightface_path_end_to_end_with_the_generated_pack_writes_a_valid_faces_table(ray_session, tmp_path, capsys):
    from pipelines import inspect_run

    video = synthetic.posed_face_video(tmp_path / "media" / "astronaut.mp4", seconds=2.0)
    run = tmp_path / "run"
    ids = make_run(run, [(str(video), 0, 48, "kept")])
    assert stage3(run, "faces.every_s=0.25") == 0
    _, faces = faces_of(run)
    assert faces and all(f["clip_id"] == ids[f"{video}:0"] for f in faces)
    assert {f["embedding_model"] for f in faces} == {"insightface:tiny/w_tiny_arcface.onnx"}
    assert all(len(f["embedding"]) == 512 and len(f["keypoints"]) == 10 for f in faces)
    assert {f["status"] for f in faces} <= STATUSES and any(f["status"] == "kept" for f in faces)
    assert len({f["face_id"] for f in faces}) == len(faces)
    frames = {f["frame"] for f in faces if f["segment"] == "clip"}
    assert len(frames) == 8  # one frame every 0.25 s of the 2 s clip, each with a face
    selected = [f for f in faces if f["selected"]]
    assert 1 <= len(selected) and all(f["identity_id"] and f["status"] == "kept" for f in selected)
    for identity in {f["identity_id"] for f in selected}:
        assert sum(f["identity_id"] == identity for f in selected) <= 10
    for face in selected:
        crop = decode_png(face["crop"])
        assert crop.ndim == 3 and crop.shape[2] == 3 and min(crop.shape[:2]) >= 16
    assert all(f["crop"] is None for f in faces if not f["selected"])
    assert "== stage faces: 1 inputs, 0 already done, 1 processed" in capsys.readouterr().out
    books = inspect_run.inspect(RunDir.of(str(run)))
    assert books["ok"], books["problems"]
    assert stage3(run) == 0  # resume: nothing left to do, nothing added
    assert "1 already done, 0 processed" in capsys.readouterr().out
    assert len(faces_of(run)[1]) == len(faces)


NEIGHBOURS = [(lambda: synthetic.astronaut(), 1.0), (lambda: synthetic.astronaut(), 1.0),
              (lambda: synthetic.tom_hanks(), 1.0)]


@pytest.fixture(scope="module")
def neighbour_video(tmp_path_factory):
    """Shot 1 (0-1 s) the astronaut, shot 2 (1-2 s, the kept clip) the astronaut, shot 3 (2-3 s) Tom Hanks."""
    folder = tmp_path_factory.mktemp("neighbours")
    return synthetic.cut_video(folder / "three_shots.mp4", [(make(), seconds) for make, seconds in NEIGHBOURS])


@pytest.mark.parametrize("margin", [1.0, 0.0])
def test_faces_in_the_neighbouring_segments_are_found_and_linked_only_when_the_margin_allows(
        ray_session, tmp_path, neighbour_video, margin):
    run = tmp_path / "run"
    clips = [(str(neighbour_video), 0, 24, "motion"), (str(neighbour_video), 24, 48, "kept"),
             (str(neighbour_video), 48, 72, "too_short")]
    ids = make_run(run, clips)
    assert stage3(run, "faces.backend=dlib", f"faces.margin_s={margin}", "faces.every_s=0.25") == 0
    _, faces = faces_of(run)
    clip = ids[f"{neighbour_video}:24"]
    assert {f["clip_id"] for f in faces} == {clip}  # filtered clips are not inputs
    in_clip = [f for f in faces if f["segment"] == "clip"]
    assert in_clip and {f["identity_id"] for f in in_clip} == {f"{clip}-p000"}
    before = [f for f in faces if f["segment"] == "before"]
    after = [f for f in faces if f["segment"] == "after"]
    if margin == 0:
        assert not before and not after
        return
    # the astronaut of the previous shot: found there only, and linked to the clip's identity
    assert len(before) == 4 and all(0.0 <= f["time_s"] < 1.0 for f in before)
    assert {f["identity_id"] for f in before} == {f"{clip}-p000"}
    assert any(f["selected"] for f in before)  # neighbour faces may be references (faces.select.from_neighbours)
    # Tom Hanks in the next shot: found, but he founds no identity of this clip
    assert len(after) == 4 and all(2.0 <= f["time_s"] < 3.0 for f in after)
    assert all(f["identity_id"] is None and f["status"] in ("not_in_clip", "pose") and not f["selected"]
               for f in after)
    assert any(f["status"] == "not_in_clip" for f in after)


def test_clips_without_faces_have_zero_rows_and_a_broken_clip_settles_alone(ray_session, tmp_path):
    from pipelines import inspect_run

    media = tmp_path / "media"
    grey = synthetic.cut_video(media / "grey.mp4", [(None, 1.0)])
    two = synthetic.cut_video(media / "two_clips.mp4", [(synthetic.astronaut(), 1.0), (synthetic.astronaut(), 1.0)])
    data = bytearray(two.read_bytes())
    at = int(len(data) * 0.6)  # inside the second clip's packets (the first clip still decodes)
    data[at:at + 400] = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    two.write_bytes(bytes(data))
    run = tmp_path / "run"
    ids = make_run(run, [(str(grey), 0, 24, "kept"), (str(two), 0, 24, "kept"), (str(two), 24, 48, "kept")])
    assert stage3(run, "faces.backend=dlib", "faces.every_s=0.25") == 0

    _, faces = faces_of(run)
    good, broken, empty = ids[f"{two}:0"], ids[f"{two}:24"], ids[f"{grey}:0"]
    assert {f["clip_id"] for f in faces} == {good}
    assert sum(f["segment"] == "clip" for f in faces) == 4 and {f["identity_id"] for f in faces} == {f"{good}-p000"}
    assert not any(f["segment"] == "after" for f in faces)  # the broken bytes after it are not searched
    run_dir = RunDir.of(str(run))
    errors = run_dir.read("errors").to_pylist()
    assert [e["input"] for e in errors] == [broken] and str(two) in errors[0]["message"]
    ledger = {row["input"]: row for row in run_dir.read_ledger("faces").to_pylist()}
    assert set(ledger) == {good, broken, empty}
    assert ledger[empty]["rows"] == 0 and ledger[empty]["error_type"] is None  # processed, zero faces
    assert ledger[broken]["error_type"] == "IncompleteVideoError"
    books = inspect_run.inspect(run_dir)
    assert books["ok"], books["problems"]
    assert pc.sum(pc.equal(run_dir.read("faces").column("selected"), True)).as_py() == 4


def test_a_clips_crop_bounds_the_search_and_boxes_stay_in_source_pixels(ray_session, tmp_path):
    """An imported clip's watermark crop: a face outside it is not found, one inside it is found
    where the uncropped search finds it, in the video's pixels."""
    video = synthetic.posed_face_video(tmp_path / "media" / "astronaut.mp4", seconds=2.0)
    run = tmp_path / "run"
    crop, band = [24.0, 16.0, 216.0, 224.0], [0.0, 0.0, 256.0, 40.0]  # the face is near (128, 128)
    ids = make_run(run, [(str(video), 0, 24, "kept"), (str(video), 0, 23, "kept"), (str(video), 24, 48, "kept")],
                   crops={1: crop, 2: band})
    assert stage3(run, "faces.backend=dlib", "faces.every_s=0.25", "faces.margin_s=0") == 0
    _, faces = faces_of(run)
    by_clip: dict[str, dict[int, dict]] = {}
    for face in faces:
        if face["clip_id"] is not None:
            by_clip.setdefault(face["clip_id"], {})[face["frame"]] = face
    assert ids[f"{video}:24"] not in by_clip  # the top band holds no face: the whole and the cropped clip do
    found = list(by_clip.values())
    assert len(found) == 2 and set(found[0]) == set(found[1]) and len(found[0]) == 4
    truth = synthetic.posed_face_centres(synthetic.astronaut(), 48)
    for frame in found[0]:
        for face in (found[0][frame], found[1][frame]):  # the same face, in source px (the crop is at 24, 16)
            x, y, w, h = face["box"]
            np.testing.assert_allclose([x + w / 2, y + h / 2], truth[frame], atol=10)
            assert crop[0] <= x and x + w <= crop[0] + crop[2] and crop[1] <= y and y + h <= crop[1] + crop[3]

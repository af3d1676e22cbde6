"""OpenS2V-5M in and out: import a part built in their layout, train on it, export it back.

One import (module fixture) serves every test; the fixture's videos carry handler names in
a legacy code page, so the import also shows such files probe, decode and train.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curation.envelope import empty_row, to_table
from curation.faces import FacesConfig
from curation.faces.detector import FaceDetector
from curation.faces.segments import CLIP_CROP, FACE_REGIONS, FaceFrames
from curation.frames import at_frames, read_clip_frames
from curation.images import decode_png
from curation.opens2v.synthetic import (
    ANN_FRAME,
    CAPTION,
    FACE_CUT,
    FACE_WINDOW,
    FACES_SIZE,
    OTHER_FACE,
    PERSON_BOX,
    PERSON_FACE,
    build,
    build_faces,
    entry,
    shapes,
)
from pipelines import export, import_opens2v
from pipelines.ledger import RunDir, commit
from schemas.tables import INPUT, KEPT, schema_for


def _import(files: dict, run: Path, *extra: str) -> int:
    return import_opens2v.main(["--json", str(files["json"]), "--videos", str(files["videos"]),
                                "--backgrounds", str(files["backgrounds"]), "--views", str(files["views"]),
                                "--pairs", str(files["pairs"]), "--run-dir", str(run), "--set", "faces=false", *extra])


@pytest.fixture(scope="module")
def imported(tmp_path_factory, ray_session) -> dict:
    root = tmp_path_factory.mktemp("opens2v")
    files = build(root)
    assert _import(files, root / "run") == 0
    return {**files, "root": root, "run": RunDir.of(str(root / "run"))}


def test_references_are_the_rle_masks_inside_the_crop(imported) -> None:
    run = imported["run"]
    clips = {c["uri"].rsplit("/", 1)[-1]: c for c in run.read("clips").to_pylist()}
    assert set(clips) == {"v0.mp4", "v1.mp4"}
    clip = clips["v0.mp4"]
    assert (clip["start_frame"], clip["end_frame"], clip["caption"]) == (2, 22, CAPTION)
    assert clip["crop"] == [0.0, 16.0, 128.0, 80.0]  # their [x0, x1, y0, y1] as our x, y, w, h
    objects = {o["label"]: o for o in run.read("objects", filter=[("clip_id", "==", clip["clip_id"])]).to_pylist()}
    statuses = {label: o["status"] for label, o in objects.items()}
    # person and woman are one subject: the better gme_score keeps it; grass is a background word
    assert statuses == {"person": "duplicate", "woman": KEPT, "dog": KEPT, "grass": "background_word"}
    crop = imported["crop"]
    masks = shapes(crop[1] - crop[0], crop[3] - crop[2])
    x0, y0 = crop[0], crop[2]
    number = FACE_CUT[0] + ANN_FRAME
    frame = read_clip_frames(clip["uri"], 0, number + 1, 0.0, float("inf"), at_frames([number])).images[0]
    frame = frame[y0:crop[3], x0:crop[1]]
    for label, idx in (("woman", "2"), ("dog", "3")):
        obj = objects[label]
        ref = decode_png(obj["ref"], "RGBA")
        ys, xs = np.nonzero(masks[idx])
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert obj["box"] == [box[0] + x0, box[1] + y0, box[2] - box[0], box[3] - box[1]]  # source px
        np.testing.assert_array_equal(ref[..., 3] > 0, masks[idx][box[1]:box[3], box[0]:box[2]])
        np.testing.assert_array_equal(ref[..., :3], frame[box[1]:box[3], box[0]:box[2]])


def test_samples_carry_caption_range_variants_and_background(imported) -> None:
    run = imported["run"]
    samples = {s["uri"].rsplit("/", 1)[-1]: s for s in run.read("samples").to_pylist()}
    a = samples["v0.mp4"]
    assert (a["caption"], a["start_frame"], a["end_frame"], a["crop"]) == (CAPTION, 2, 22, [0.0, 16.0, 128.0, 80.0])
    assert {o["label"] for o in a["objects"]} == {"woman", "dog"}
    woman = next(o for o in a["objects"] if o["label"] == "woman")
    assert woman["variant_source"] == "generated"
    np.testing.assert_array_equal(decode_png(woman["variant"], "RGBA"), imported["view"])
    dog = next(o for o in a["objects"] if o["label"] == "dog")  # paired with key1's dog: its cut-out
    other = next(o for o in samples["v1.mp4"]["objects"] if o["label"] == "dog")
    assert (dog["variant_source"], dog["variant"], dog["variant_id"]) == ("cross_clip", other["ref"], other["source_id"])
    np.testing.assert_array_equal(decode_png(a["background"], "RGB"), imported["background"])
    assert samples["v1.mp4"]["background"] is None  # key1 has no background file


def test_cross_video_pairs_become_cross_pairs(imported) -> None:
    run = imported["run"]
    (pair,) = run.read("cross_pairs").to_pylist()
    labels = {o["object_id"]: o["label"] for o in run.read("objects").to_pylist()}
    assert labels[pair["identity_a"]] == labels[pair["identity_b"]] == "dog"
    assert pair["clip_a"] != pair["clip_b"] and pair["similarity"] == pytest.approx(0.97)


def test_broken_keys_are_error_rows_naming_file_and_field(imported) -> None:
    errors = {e["input"]: e["message"] for e in imported["run"].read("errors").to_pylist() if e["stage"] == "opens2v"}
    assert set(errors) == {"key_missing", "key_rle_size", "key_bad_idx", "key_truncated"}
    assert "gone.mp4" in errors["key_missing"] and "metadata.path" in errors["key_missing"]
    assert "dataset1.json" in errors["key_rle_size"] and "mask_annotation" in errors["key_rle_size"]
    assert "metadata.crop" in errors["key_rle_size"]
    assert "mask_map" in errors["key_bad_idx"] and "dataset1.json" in errors["key_bad_idx"]
    assert "dataset1.json" in errors["key_truncated"]
    imports = imported["run"].read("imports").to_pylist()
    assert sorted(r["key"] for r in imports) == ["key0", "key1"]


def test_a_rerun_imports_nothing_twice(imported) -> None:
    run = imported["run"]
    before = {t: run.read(t).num_rows for t in ("videos", "clips", "objects", "pairs", "cross_pairs", "samples")}
    assert _import(imported, Path(run.root.path)) == 0
    assert {t: run.read(t).num_rows for t in before} == before


@pytest.mark.slow
def test_two_training_steps_on_the_imported_samples(imported, tmp_path: Path) -> None:
    import torch

    from model.train.__main__ import main as train

    before = torch.get_num_threads()
    try:
        assert train(["--manifest", str(Path(imported["run"].root.path) / "samples"), "--base", "tiny",
                      "--steps", "2", "--batch-size", "1", "--micro-batch", "1", "--data-workers", "0",
                      "--frames", "9", "--min-frames", "5", "--bucket", "64x48", "--out", str(tmp_path / "out")]) == 0
    finally:
        torch.set_num_threads(before)


def test_hf_export_loads_with_datasets(imported, tmp_path: Path) -> None:
    import datasets

    assert export.main(["--run-dir", imported["run"].root.path, "--format", "hf", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "README.md").read_text().startswith("---\nconfigs:")
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "data" / "*.parquet"), split="train")
    assert len(ds) == 2
    row = next(r for r in ds if r["uri"].endswith("v0.mp4"))
    assert row["background"].size == (imported["background"].shape[1], imported["background"].shape[0])
    refs = {o["label"]: o["ref"] for o in row["objects"]}
    assert refs["dog"].mode == "RGBA" and refs["dog"].size == (31, 31)


def test_round_trip_through_opens2v_gives_the_same_references(imported, tmp_path: Path) -> None:
    run = imported["run"]
    out = tmp_path / "opens2v"
    assert export.main(["--run-dir", run.root.path, "--format", "opens2v", "--out", str(out),
                        "--videos-root", str(imported["videos"])]) == 0
    part = json.loads((out / "samples.json").read_text())
    assert len(part) == 2
    again = tmp_path / "again"
    pairs = [p for group in json.loads((out / "pairs" / "cross_frames_pairs.json").read_text()).values() for p in group]
    (cluster,) = json.loads((out / "pairs" / "cluster_videos.json").read_text()).values()
    assert [p["cur_id"].split("/")[0] for p in pairs] == ["samples_cluster"]
    assert len(cluster) == 2 and set(cluster) == {p[side] for p in pairs for side in ("cur_id", "aft_id")}
    assert import_opens2v.main(["--json", str(out / "samples.json"), "--videos", str(imported["videos"]),
                                "--backgrounds", str(out / "backgrounds"), "--views", str(out / "views"),
                                "--pairs", str(out / "pairs"), "--run-dir", str(again), "--set", "faces=false"]) == 0

    def references(r: RunDir) -> dict:
        return {(s["uri"], o["label"]): (decode_png(o["ref"], "RGBA").tobytes(),
                                         o["variant"] if o["variant_source"] == "generated" else None)
                for s in r.read("samples").to_pylist() for o in s["objects"]}

    assert references(RunDir.of(str(again))) == references(run)

    def cross_pairs(r: RunDir) -> set:
        """Each pair as its two sides (video, label) and similarity: ids hold mask numbers, which the export renumbers."""
        side = {o["source_id"]: (s["uri"], o["label"]) for s in r.read("samples").to_pylist() for o in s["objects"]}
        return {(frozenset((side[p["identity_a"]], side[p["identity_b"]])), p["similarity"])
                for p in r.read("cross_pairs").to_pylist()}

    assert cross_pairs(run) and cross_pairs(RunDir.of(str(again))) == cross_pairs(run)
    first = {s["uri"]: s for s in run.read("samples").to_pylist()}
    for s in RunDir.of(str(again)).read("samples").to_pylist():
        assert (s["caption"], s["start_frame"], s["end_frame"], s["crop"]) == \
            tuple(first[s["uri"]][k] for k in ("caption", "start_frame", "end_frame", "crop"))
        assert (s["background"] is None) == (first[s["uri"]]["background"] is None)


def test_a_missing_flag_or_file_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    from pipelines.cli import cli

    assert cli(import_opens2v.main, ["--run-dir", str(tmp_path / "run"), "--videos", str(tmp_path)]) == 2
    assert "--json is required" in capsys.readouterr().err
    assert cli(import_opens2v.main, ["--run-dir", str(tmp_path / "run"), "--videos", str(tmp_path),
                                     "--json", str(tmp_path / "nope.json")]) == 2
    assert "nope.json: no such file" in capsys.readouterr().err
    assert cli(export.main, ["--run-dir", str(tmp_path / "empty"), "--format", "hf"]) == 2
    assert "has no samples table" in capsys.readouterr().err


def test_limit_never_splits_a_video_and_a_late_clip_is_an_error_row(imported, tmp_path: Path) -> None:
    table = pa.table({"path": ["a", "a", "b", "b", "b", "c"]})
    assert [import_opens2v.whole_videos(table, n).num_rows for n in (None, 1, 2, 3, 6)] == [6, 2, 2, 5, 6]
    run = tmp_path / "run"
    shutil.copytree(imported["run"].root.path, run)
    late = entry("v0.mp4", 128, 96)
    late["metadata"]["face_cut"] = [4, 20]  # another clip of a video the first import finished
    part = tmp_path / "late.json"
    part.write_text(json.dumps({"key_late": late}))
    assert import_opens2v.main(["--json", str(part), "--videos", str(imported["videos"]), "--run-dir", str(run),
                                "--set", "faces=false"]) == 0
    errors = {e["input"]: e["message"] for e in RunDir.of(str(run)).read("errors").to_pylist()}
    assert "earlier import finished" in errors["key_late"]
    assert RunDir.of(str(run)).read("clips").num_rows == imported["run"].read("clips").num_rows


def _centres(faces: list[dict]) -> list[tuple[float, float]]:
    return [(f["box"][0] + f["box"][2] / 2, f["box"][1] + f["box"][3] / 2) for f in faces]


def _inside(point: tuple[float, float], box: tuple) -> bool:
    return box[0] <= point[0] < box[0] + box[2] and box[1] <= point[1] < box[1] + box[3]


def _on_the_person_face(point: tuple[float, float]) -> bool:
    """Within 32 px of the face in the person box, in the video's pixels (in the crop's, the
    point would lie the crop's 42 px offset higher: the generated detector is off by ~24 px)."""
    return all(abs(point[k] - (PERSON_FACE[k] + FACE_WINDOW / 2)) < 32 for k in (0, 1))


def test_face_search_is_bounded_by_the_person_boxes(tmp_path: Path) -> None:
    """Stage 3's operators (no Ray) on a frame with two faces in the crop: everywhere finds both;
    with regions, only the face in a region, on the region's frame; with no region, none."""
    files = build_faces(tmp_path, keys=1)
    crop = files["crop"]
    frame = FACE_CUT[0] + ANN_FRAME
    config = FacesConfig(margin_s=0.0)
    detector = FaceDetector(config, models="tiny")
    other = (OTHER_FACE[0], OTHER_FACE[1], FACE_WINDOW, FACE_WINDOW)

    def faces(regions: list | None) -> list[dict]:
        row = {"clip_id": "c", INPUT: "c", "uri": str(files["videos"] / "v0.mp4"), "start_frame": FACE_CUT[0],
               "end_frame": FACE_CUT[1], "start_s": FACE_CUT[0] / 24, "end_s": FACE_CUT[1] / 24, "fps": 24.0,
               "width": FACES_SIZE, "height": FACES_SIZE,
               CLIP_CROP: [crop[0], crop[2], crop[1] - crop[0], crop[3] - crop[2]], FACE_REGIONS: regions}
        table = to_table([row])
        if regions is None:
            table = table.drop_columns([FACE_REGIONS])
        return [f for f in detector(FaceFrames(config)(table)).to_pylist() if f.get("box")]

    everywhere = _centres(faces(None))
    assert any(_inside(c, PERSON_BOX) for c in everywhere) and any(_inside(c, other) for c in everywhere)
    found = faces([[frame, *PERSON_BOX]])
    assert found and {f["frame"] for f in found} == {frame}
    assert all(_on_the_person_face(c) for c in _centres(found))
    assert all(len(f["embedding"]) == 512 for f in found)
    moved = faces([[frame, *other]])  # the same search around the other face finds that one only
    assert moved and all(_inside(c, other) for c in _centres(moved))
    assert not faces([])  # no person: nowhere to search


@pytest.mark.slow
def test_faces_by_default_from_the_person_boxes_get_identities_and_cross_pairs(tmp_path, ray_session) -> None:
    """The default import runs stage 3 over the person boxes (the generated InsightFace pack):
    the face in the person box is found on the annotated frame, in source px, with an embedding;
    the face outside every person box is not; two keys of one person make a cross pair."""
    files = build_faces(tmp_path, keys=2)
    run = tmp_path / "run"
    assert import_opens2v.main(["--json", str(files["json"]), "--videos", str(files["videos"]),
                                "--run-dir", str(run), "--models", "tiny"]) == 0
    run_dir = RunDir.of(str(run))
    clips = run_dir.read("clips").to_pylist()
    faces = run_dir.read("faces").to_pylist()
    found = [f for f in faces if f.get("box")]
    assert {f["clip_id"] for f in found} == {c["clip_id"] for c in clips}
    assert {f["frame"] for f in found} == {FACE_CUT[0] + ANN_FRAME}
    assert all(_on_the_person_face(c) for c in _centres(found))  # never the face outside the person box
    assert all(len(f["embedding"]) == 512 for f in found)
    selected = {f["identity_id"] for f in found if f["selected"]}
    assert len(selected) == 2  # one identity per clip
    (pair,) = run_dir.read("cross_pairs").to_pylist()
    assert {pair["identity_a"], pair["identity_b"]} == selected
    for sample in run_dir.read("samples").to_pylist():
        assert len(sample["faces"]) >= 1 and {f["identity_id"] for f in sample["faces"]} <= selected
        assert {o["label"] for o in sample["objects"]} == {"woman"}  # the person mask stays an object


def test_chain_ledgers_read_once_and_hand_each_input_to_one_block(tmp_path):
    """The import's tasks ask one snapshot which chain inputs they may commit: none a ledger held
    when the job started, none another block claimed; a retried block gets its own back."""
    commit(to_table([empty_row("v1")], schema_for("clips")), str(tmp_path), "clips", "clips")  # an earlier run
    ledgers = import_opens2v.ChainLedgers(str(tmp_path), ["probe", "clips"])
    assert ledgers.claim("clips", ["v1", "v2", "v3"], "block-a") == (["v2", "v3"], ["v1"])
    assert ledgers.claim("clips", ["v3", "v4"], "block-b") == (["v4"], ["v3"])  # v3 is block a's
    assert ledgers.claim("clips", ["v2", "v3"], "block-a") == (["v2", "v3"], [])  # a retry of block a
    assert ledgers.claim("probe", ["v1"], "block-b") == (["v1"], [])  # each stage its own ledger

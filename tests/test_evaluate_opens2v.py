"""OpenS2V-Eval layout in and out, their merge, the summary, and the command with --generate (tiny)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.faces.synthetic import astronaut, face_window
from model.evaluate.__main__ import main
from model.evaluate.entries import FACE, read_entries
from model.evaluate.opens2v import (
    merged_total,
    per_metric_json,
    read_folder,
    total_notes,
    write_jsons,
)
from model.evaluate.summary import bootstrap_interval, summarize
from schemas.command import run_command

# The nesting of OpenS2V-Eval's published per-metric outputs (eval/demo_result), values ours.
PUBLISHED_LAYOUT = {
    "facesim": {"singleface_3": {"cur_score": 0.5, "arc_score": 0.6}},
    "gmescore": {"singleface_3": {"gme_score": 0.7}},
    "aesthetic_score": {"singleface_3": {"aes_score": 5.5}},
    "motionscore": {"singleface_3": {"motion_fb": 0.25, "motion_lk": 3.0}},
    "nexusscore": {"singleface_3": {"nexus_score": 0.02}},
    "naturalscore_1": {"singleface_3": "4"},
    "naturalscore_2": {"singleface_3": "3"},
    "naturalscore_3": {"singleface_3": "5"},
}


def rows_for(entry_id, **values):
    return [{"entry_id": entry_id, "metric": k, "value": v, "status": "kept"} for k, v in values.items()]


def test_per_metric_files_match_their_layout_and_merge_like_their_script(tmp_path):
    rows = rows_for("singleface_3", facesim_cur=0.5, id_sim=0.6, gme_score=0.7, aesthetic=5.5, motion_fb=0.25,
                    motion_lk=3.0, nexus_score=0.02, naturalscore_1=4.0, naturalscore_2=3.0, naturalscore_3=5.0,
                    subj_sim=0.9)
    rows += rows_for("multiobject_1", aesthetic=8.0, motion_fb=-1.5, nexus_score=0.0, gme_score=0.3)
    rows.append({"entry_id": "multiobject_1", "metric": "id_sim", "value": None, "status": "no_face_in_video"})
    files = per_metric_json(rows)
    only_first = {name: {k: v for k, v in content.items() if k == "singleface_3"} for name, content in files.items()}
    assert only_first == PUBLISHED_LAYOUT
    assert "multiobject_1" not in files["facesim"]  # nothing scored there: left out, as their merge expects

    folder = tmp_path / "opens2v"
    (folder).mkdir()
    (folder / "facesim.json").write_text("{}")  # a stale file of ours is replaced or removed
    written = write_jsons(rows, folder)
    assert sorted(p.name for p in folder.glob("*.json")) == sorted(p.name for p in written) == sorted(
        f"{name}.json" for name in PUBLISHED_LAYOUT)
    total = merged_total(read_folder(folder), "Open-Domain")
    # By hand, with their ranges: aes mean(5.5, clip(8, 4, 7)=7)=6.25 -> 0.75; motion mean(0.25, |-1.5|->1)=0.625;
    # facesim_cur 0.5; gme mean(0.7, 0.3)=0.5; nexus 0.02 (the 0 is skipped) / 0.05 = 0.4; natural 4 -> 0.75.
    expected = {"aes_score": 0.75, "motion_score": 0.625, "facesim_cur": 0.5, "gme_score": 0.5,
                "nexus_score": 0.4, "natural_score": 0.75}
    for key, value in expected.items():
        assert abs(total[key] - value) < 1e-9, key
    weighted = 0.12 * 0.75 + 0.12 * 0.625 + 0.20 * 0.5 + 0.12 * 0.5 + 0.20 * 0.4 + 0.24 * 0.75
    assert abs(total["total_score"] - weighted) < 1e-9
    notes = total_notes(read_folder(folder), "Open-Domain")
    assert sorted(notes["substitutes"]) == ["natural_score", "nexus_score"] and notes["missing"] == []
    (folder / "facesim.json").unlink()  # no CurricularFace weights: their merge counts 0, we say so
    assert total_notes(read_folder(folder), "Human-Domain") == {
        "substitutes": {"natural_score": total_notes(read_folder(folder))["substitutes"]["natural_score"]},
        "missing": ["facesim_cur"]}
    (folder / "facesim.json").write_text(json.dumps(files["facesim"]))
    human = merged_total(read_folder(folder), "Human-Domain")
    assert "nexus_score" not in human and abs(human["total_score"] - (
        0.15 * 0.75 + 0.15 * 0.625 + 0.25 * 0.5 + 0.15 * 0.5 + 0.30 * 0.75)) < 1e-9


def test_harness_1_1_layout_and_weights(tmp_path):
    """Their current harness: motion_amplitude.json + motion_smoothness.json (as their
    eval/demo_result holds them) and the 1.1 weights; a folder switched from 1.0 loses motionscore.json."""
    rows = rows_for("faceobj_14", facesim_cur=0.5, gme_score=0.7, aesthetic=5.5, motion_fb=0.35, motion_lk=7.2,
                    motion_smoothness=0.9, nexus_score=0.02, naturalscore_1=4.0, naturalscore_2=4.0,
                    naturalscore_3=4.0)
    files = per_metric_json(rows, "1.1")
    assert files["motion_amplitude"] == {"faceobj_14": {"motion_fb": 0.35, "motion_lk": 7.2}}
    assert files["motion_smoothness"] == {"faceobj_14": {"motion_smoothness": 0.9}}
    assert "motionscore" not in files
    folder = tmp_path / "opens2v"
    write_jsons(rows, folder)  # 1.0 first: its motionscore.json must not survive the switch
    write_jsons(rows, folder, "1.1")
    assert not (folder / "motionscore.json").exists() and (folder / "motion_smoothness.json").exists()
    total = merged_total(read_folder(folder), "Open-Domain", "1.1")
    # aes (5.5-4)/3=0.5, smoothness 0.9, amplitude 0.35, facesim 0.5, gme 0.7, nexus 0.4, natural 0.75
    weighted = 0.16 * 0.5 + 0.06 * 0.9 + 0.02 * 0.35 + 0.20 * 0.5 + 0.12 * 0.7 + 0.20 * 0.4 + 0.24 * 0.75
    assert abs(total["total_score"] - weighted) < 1e-9 and abs(total["motion_smoothness"] - 0.9) < 1e-9
    assert "motion_smoothness" in total_notes(read_folder(folder), "Open-Domain", "1.1")["substitutes"]
    with pytest.raises(ValueError, match="unknown OpenS2V-Eval version '2.0'"):
        merged_total(read_folder(folder), "Open-Domain", "2.0")


def test_summary_mean_bootstrap_interval_and_paper_total():
    values = np.array([0.2, 0.4, 0.6, 0.8])
    low, high = bootstrap_interval(values)
    assert low < values.mean() < high and (low, high) == bootstrap_interval(values)
    rows = rows_for("a", id_sim=0.5, aesthetic=5.0) + rows_for("b", id_sim=0.7, aesthetic=6.0)
    rows.append({"entry_id": "c", "metric": "id_sim", "value": None, "status": "no_video"})
    summary = summarize(rows)
    assert summary["metrics"]["id_sim"]["videos"] == 2 and summary["metrics"]["id_sim"]["not_scored"] == {"no_video": 1}
    assert abs(summary["paper_total"] - (0.6 + 0.55) / 2) < 1e-9  # aesthetic on the paper's /10 scale


def make_opens2v(tmp_path):
    (tmp_path / "Images").mkdir()
    Image.fromarray(face_window(astronaut(), (96, 96))).save(tmp_path / "Images" / "face.png")
    spec = {"singleface_1": {"img_paths": ["Images/face.png"], "prompt": "A woman smiles.\n\nbackground",
                             "synthesis_flag": "wrong", "class_label": ["woman"]},
            "singleobj_2": {"img_paths": ["Images/missing.jpg"], "prompt": "A cup.", "class_label": ["Cup"]}}
    (tmp_path / "eval.json").write_text(json.dumps(spec))
    return tmp_path / "eval.json"


def test_opens2v_json_in_generate_tiny_and_score(tmp_path, capsys):
    source = make_opens2v(tmp_path)
    entries = {e.key: e for e in read_entries(str(source), str(tmp_path / "videos"))}
    assert entries["singleface_1"].refs[0].kind == FACE and entries["singleface_1"].error is None
    assert "missing.jpg" in entries["singleobj_2"].error and entries["singleobj_2"].video.name == "singleobj_2.mp4"
    assert entries["singleobj_2"].refs == []

    out = tmp_path / "out"
    argv = ["--opens2v", str(source), "--videos", str(tmp_path / "videos"), "--out-dir", str(out),
            "--models", "tiny", "--metrics", "motion,aesthetic", "--frames", "2", "--generate", "--base", "tiny",
            "--html", str(out / "page.html")]
    assert main(argv) == 0
    assert (tmp_path / "videos" / "singleface_1.mp4").is_file()  # made by model.sample's tiny model
    table = pq.read_table(out / "scores.parquet").to_pylist()
    by = {(r["entry_id"], r["metric"]): r for r in table}
    assert by[("singleface_1", "motion_smoothness")]["status"] == "kept"
    assert by[("singleface_1", "aesthetic")]["model"] == "aesthetic=tiny"
    assert by[("singleobj_2", "aesthetic")]["status"] == "bad_reference"
    assert sorted(p.name for p in (out / "opens2v").glob("*.json")) == ["aesthetic_score.json", "motionscore.json"]
    assert set(json.loads((out / "opens2v" / "motionscore.json").read_text())["singleface_1"]) == {"motion_fb", "motion_lk"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["aesthetic"]["videos"] == 1 and "total_score" in summary["opens2v"]
    page = (out / "page.html").read_text()
    assert page.count('class="sample-card eval-card"') == 2 and "missing.jpg" in page
    # a user mistake is one line, exit 2
    capsys.readouterr()
    assert run_command(main, ["--videos", str(tmp_path), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exactly one of --manifest" in err

"""pipelines/evaluate_videos.py: the evaluator as a Ray job: books balance, broken inputs, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pyarrow as pa
import pytest
from conftest import ROOT, run_script, start_script
from PIL import Image

from curation import synthetic
from pipelines.evaluate_videos import main
from pipelines.ledger import RunDir
from schemas import schema_for, write_table

MOTION = ["--set", "evaluate.metrics=[motion]", "--set", "evaluate.frames=2"]


def make_inputs(folder, count: int) -> tuple:
    """A release prompt file with ``count`` good entries, one without a video, one with a missing reference."""
    folder.mkdir(parents=True, exist_ok=True)
    videos = folder / "videos"
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)
    Image.fromarray(ref).save(folder / "ref.png")
    lines = []
    for i in range(count):
        frames = [np.roll(np.kron(ref, np.ones((2, 2, 1), np.uint8)), i + k, axis=1) for k in range(4)]
        synthetic.write_video(videos / f"v{i:03d}.mp4", frames)
        lines.append(f"v{i:03d}@@a moving pattern@@ref.png")
    lines += ["novideo@@nothing was generated@@ref.png", "badref@@its image is gone@@gone.png"]
    (folder / "prompts.txt").write_text("\n".join(lines) + "\n")
    return folder / "prompts.txt", videos


def test_job_scores_every_entry_and_says_why_for_broken_ones(ray_session, tmp_path, capsys):
    prompts, videos = make_inputs(tmp_path / "in", 3)
    run = tmp_path / "run"
    argv = ["--run-dir", str(run), "--input", str(prompts), "--videos", str(videos), "--models", "tiny", *MOTION]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "== stage evaluate: 5 inputs" in out and "every input accounted for" in out
    rundir = RunDir.of(str(run))
    scores = rundir.read("scores").to_pylist()
    assert len(scores) == 5 * 3 and len({r["score_id"] for r in scores}) == 15
    status = {(r["entry_id"], r["metric"]): r["status"] for r in scores}
    assert status[("v000", "motion_fb")] == "kept" and status[("novideo", "motion_fb")] == "no_video"
    assert status[("badref", "motion_smoothness")] == "bad_reference"
    assert next(r for r in scores if r["entry_id"] == "badref")["detail"].count("gone.png") >= 1
    ledger = rundir.read_ledger("evaluate")
    assert sorted(ledger.column("input").to_pylist()) == ["badref", "novideo", "v000", "v001", "v002"]
    assert sum(ledger.column("rows").to_pylist()) == 15
    summary = json.loads((run / "evaluation" / "summary.json").read_text())
    assert summary["metrics"]["motion_fb"]["videos"] == 3 and (run / "evaluation" / "opens2v" / "motionscore.json").exists()

    assert main(argv) == 0  # a rerun finds everything done and adds nothing
    assert "5 already done" in capsys.readouterr().out
    assert rundir.read("scores").num_rows == 15


def test_job_on_a_samples_table_reads_references_in_the_scoring_task(ray_session, tmp_path, capsys):
    """The driver indexes ids only; a reference PNG that does not decode is found by the actor."""
    folder = tmp_path / "in"
    _, videos = make_inputs(folder, 2)
    png = (folder / "ref.png").read_bytes()
    base = {"clip_id": "c", "uri": "/v.mp4", "start_frame": 0, "end_frame": 4, "fps": 24.0, "provenance": "{}",
            "caption": "a moving pattern", "subject_words": [], "objects": [], "background": None}
    rows = [{**base, "sample_id": key, "faces": [{"identity_id": "i", "label": None, "ref": ref}]}
            for key, ref in (("v000", png), ("v001", b"not a png"))]
    write_table(pa.Table.from_pylist(rows, schema=schema_for("samples")), str(folder / "samples.parquet"), "samples")
    run = tmp_path / "run"
    argv = ["--run-dir", str(run), "--input", str(folder / "samples.parquet"), "--videos", str(videos),
            "--models", "tiny", *MOTION]
    assert main(argv) == 0
    status = {(r["entry_id"], r["metric"]): (r["status"], r["detail"]) for r in RunDir.of(str(run)).read("scores").to_pylist()}
    assert status[("v000", "motion_fb")][0] == "kept"
    assert status[("v001", "motion_fb")][0] == "bad_reference" and "unreadable reference" in status[("v001", "motion_fb")][1]


@pytest.mark.slow
def test_killed_job_resumes_with_the_same_rows(tmp_path):
    prompts, videos = make_inputs(tmp_path / "in", 16)
    run = tmp_path / "run"
    args = [str(ROOT / "pipelines" / "evaluate_videos.py"), "--run-dir", str(run), "--input", str(prompts),
            "--videos", str(videos), "--models", "tiny", *MOTION, "--set", "evaluate.pool.batch_size=1",
            "--part-inputs", "1"]
    proc = start_script(args)
    ledger = run / "_ledger" / "evaluate"
    deadline = time.time() + 480  # a loaded machine starts Ray slowly
    while time.time() < deadline and len(list(ledger.glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = len(list(ledger.glob("part-*.parquet")))
    done = RunDir.of(str(run)).read_ledger("evaluate").num_rows  # a ledger part may hold several entries
    assert 3 <= committed and done < 18, "the kill must land mid-run for this test to mean anything"
    result = run_script(args, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "every input accounted for" in result.stdout and f"{done} already done" in result.stdout
    rundir = RunDir.of(str(run))
    scores = rundir.read("scores")
    ids = scores.column("score_id").to_pylist()
    assert len(ids) == len(set(ids)) == 18 * 3
    assert rundir.read_ledger("evaluate").num_rows == 18

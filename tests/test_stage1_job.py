"""Stage 1 as a Ray Data job: every video accounted for, captions stored, resumable."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
from test_stage1_ops import partly_decodable, videos_table

from curation import synthetic
from curation.clips.scenes import ScenesConfig
from curation.clips.splitter import ClipSplitter
from pipelines.ledger import RunDir
from pipelines.stage0_probe import main as probe
from pipelines.stage1_clips import main as clips
from schemas.validate import validate

TINY = ["--models", "tiny", "--set", "caption.frames=4", "--set", "caption.max_new_tokens=6",
        "--set", "caption.pool.batch_size=3"]


def test_stage1_job(ray_session, tmp_path, capsys):
    media = tmp_path / "media"
    synthetic.cuts_video(media / "cuts.mp4", cuts=[60, 130], num_frames=300)
    synthetic.static_video(media / "static.mp4", seconds=2.5)
    synthetic.moving_video(media / "moving.mp4", seconds=2.5)
    shutil.copy(media / "moving.mp4", media / "same_moving.mp4")  # same video_id at a second path
    partly_decodable(media)
    (media / "whole.mp4").unlink()
    run = tmp_path / "run"
    assert probe(["--input", str(media), "--run-dir", str(run)]) == 0
    videos = RunDir.of(str(run)).read("videos")
    assert videos.num_rows == 5  # the broken file probes fine: its first frame decodes
    capsys.readouterr()

    assert clips(["--run-dir", str(run), *TINY]) == 0
    report = capsys.readouterr().out
    assert "== stage clips: 4 inputs" in report and "every input accounted for" in report

    rundir = RunDir.of(str(run))
    table = rundir.read("clips")  # every part validated against the clips schema
    for path in sorted((run / "clips").glob("*.parquet")):
        validate(pq.read_table(path), "clips", source=str(path))
    rows = table.to_pylist()
    ids = {r["uri"].rsplit("/", 1)[1]: r["video_id"] for r in videos.to_pylist()}
    assert ids["moving.mp4"] == ids["same_moving.mp4"]
    assert len({r["video_id"] for r in rows}) == 3  # cuts, static, moving (once)
    assert len({r["clip_id"] for r in rows}) == len(rows)

    errors = rundir.read("errors").to_pylist()
    assert [(e["stage"], e["input"]) for e in errors] == [("clips", ids["broken.mp4"])]
    assert "broken.mp4" in errors[0]["message"] and "decoding failed" in errors[0]["message"]

    # The other videos' clips are all there: the same ranges the splitter finds on its own.
    expected = ClipSplitter(ScenesConfig())(videos_table(*((media / n, ids[n]) for n in ("cuts.mp4", "static.mp4",
                                                                                           "moving.mp4"))))
    assert sorted(r["clip_id"] for r in rows) == sorted(expected.column("clip_id").to_pylist())

    static = [r for r in rows if r["video_id"] == ids["static.mp4"]]
    assert [r["status"] for r in static] == ["motion"] and static[0]["caption"] is None
    kept = [r for r in rows if r["status"] == "kept"]
    assert len(kept) >= 3
    for row in kept:
        assert row["caption"] and isinstance(row["subjects"], list)
        assert row["motion"] is not None and row["aesthetic"] is not None

    state = json.loads((run / "run.json").read_text())["stages"]["clips"]
    assert state["config"]["caption"]["pool"]["batch_size"] == 3
    assert state["last_run"]["errors"] == 1 and state["last_run"]["processed"] == 4

    # Rerun after completion: nothing processed, no file added or rewritten.
    files = {p: p.stat().st_mtime_ns for p in run.rglob("*.parquet")}
    assert clips(["--run-dir", str(run), *TINY]) == 0
    assert "4 already done, 0 processed" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*.parquet")} == files

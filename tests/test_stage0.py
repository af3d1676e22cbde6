"""Stage 0, the reference job: every file accounted for, resumable, kill-safe."""

import json
import os
import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, run_script, start_script

from curation import synthetic
from curation.sources import list_inputs
from pipelines.ledger import RunDir
from pipelines.stage0_probe import main


def parts(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*.parquet"))


def test_good_and_bad_corpus(ray_session, corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--input", str(corpus["root"]), "--run-dir", str(run)]) == 0
    report = capsys.readouterr().out
    assert "== stage probe: 12 inputs" in report and "every input accounted for" in report

    rundir = RunDir.of(str(run))
    videos, errors = rundir.read("videos"), rundir.read("errors")
    assert sorted(videos.column("uri").to_pylist()) == sorted(str(p) for p in corpus["good"])
    assert sorted(errors.column("input").to_pylist()) == sorted(str(p) for p in corpus["bad"].values())
    for row in errors.to_pylist():  # the message names the file and says why
        assert row["message"].startswith(row["input"]) and row["stage"] == "probe"
    reasons = {Path(r["input"]).name: r["message"] for r in errors.to_pylist()}
    assert "0 bytes" in reasons["empty.mp4"] and "no video stream" in reasons["sound.m4a"]
    assert "1x1" in reasons["one_pixel.mkv"]
    moving = next(r for r in videos.to_pylist() if r["uri"].endswith("moving.mp4"))
    assert (moving["width"], moving["height"], moving["fps"], moving["num_frames"]) == (256, 144, 24.0, 24)

    state = json.loads((run / "run.json").read_text())["stages"]["probe"]
    last = state["last_run"]
    assert last["processed"] == last["rows_out"] + last["errors"] == 12
    assert state["totals"]["inputs"] == 12 and state["versions"]["pyarrow"] == pa.__version__

    # Rerun: nothing processed, no file added or rewritten.
    before = {p: (run / p).stat().st_mtime_ns for p in parts(run)}
    assert main(["--input", str(corpus["root"]), "--run-dir", str(run)]) == 0
    assert "12 already done, 0 processed" in capsys.readouterr().out
    assert {p: (run / p).stat().st_mtime_ns for p in parts(run)} == before


def test_input_forms_agree(corpus, tmp_path):
    folder = corpus["root"] / "good"
    by_folder = list_inputs(str(folder))
    listing = tmp_path / "list.txt"
    listing.write_text("# my videos\n" + "\n".join(by_folder) + "\n")
    manifest = tmp_path / "list.parquet"
    pq.write_table(pa.table({"uri": by_folder}), manifest)
    assert len(by_folder) == 6
    assert list_inputs(str(folder / "*.mp*")) == [u for u in by_folder if ".mp" in Path(u).suffix]
    assert list_inputs(str(listing)) == list_inputs(str(manifest)) == by_folder
    assert list_inputs(f"file://{folder}") == [f"file://{u}" for u in by_folder]
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        list_inputs(str(tmp_path / "nothing-here"))


def test_pyarrow_uri_and_limit(ray_session, corpus, tmp_path, capsys):
    run = tmp_path / "run"
    uri = f"file://{corpus['root'] / 'good'}"
    assert main(["--input", uri, "--run-dir", f"file://{run}", "--limit", "2"]) == 0
    assert RunDir.of(str(run)).read("videos").num_rows == 2
    assert main(["--input", uri, "--run-dir", f"file://{run}"]) == 0
    videos = RunDir.of(str(run)).read("videos")
    assert videos.num_rows == 6 and len(set(videos.column("uri").to_pylist())) == 6
    assert all(u.startswith("file://") for u in videos.column("uri").to_pylist())


@pytest.mark.slow
def test_killed_job_resumes_without_duplicates_or_losses(tmp_path):
    inputs = tmp_path / "many"
    frame = synthetic.write_video(tmp_path / "seed.mp4", synthetic.scene_frames(4, [], height=32, width=32))
    data = frame.read_bytes()
    for i in range(200):  # distinct contents (a trailing byte) so ids differ
        (inputs / f"{i // 50}").mkdir(parents=True, exist_ok=True)
        (inputs / f"{i // 50}" / f"v{i:03d}.mp4").write_bytes(data + bytes([i % 256]) * (1 + i // 256))
    run = tmp_path / "run"
    args = [str(ROOT / "pipelines" / "stage0_probe.py"), "--input", str(inputs), "--run-dir", str(run),
            "--set", "probe.pool.batch_size=1", "--part-inputs", "4"]
    proc = start_script(args)
    ledger = run / "_ledger" / "probe"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(ledger.glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    # A second job of the same stage on the same run directory refuses at once, touching nothing.
    second = run_script(args, timeout=120)
    assert second.returncode == 2 and f"already running (pid {proc.pid}" in second.stderr, second.stderr[-2000:]
    assert "Traceback" not in second.stderr and proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = len(list(ledger.glob("part-*.parquet")))
    assert 3 <= committed < 50, "the kill must land mid-run for this test to mean anything"

    assert (run / "_locks" / "probe.lock").exists()  # the killed job could not release it
    result = run_script(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "every input accounted for" in result.stdout
    assert "took over the lock of a job that is gone" in result.stdout
    assert not (run / "_locks" / "probe.lock").exists()
    rundir = RunDir.of(str(run))
    videos = rundir.read("videos")  # reading every part validates it: no half-written file
    uris = videos.column("uri").to_pylist()
    assert len(uris) == len(set(uris)) == 200
    assert rundir.read("errors").num_rows == 0
    assert rundir.read_ledger("probe").num_rows == 200
    parts = list(ledger.glob("part-*.parquet"))
    sizes = [pq.read_metadata(path).num_rows for path in parts]
    assert max(sizes) <= 4 and len(parts) < 200, sizes  # --part-inputs 4: commits of up to 4 inputs
    assert len(list((run / "videos").glob("part-*.parquet"))) == len(parts)
    for path in run.rglob("*.parquet"):
        pq.read_table(path)


def test_inspect_run_balances_and_catches_a_duplicated_part(ray_session, corpus, tmp_path, capsys):
    from pipelines.inspect_run import main as inspect_main

    run = tmp_path / "run"
    assert main(["--input", str(corpus["root"] / "good"), "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert inspect_main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "probe    6 inputs: 6 finished -> videos 6 rows" in out and "books balance" in out

    part = next((run / "videos").glob("part-*.parquet"))
    (run / "videos" / "part-copied-by-hand.parquet").write_bytes(part.read_bytes())
    assert inspect_main([str(run)]) == 1
    assert "appear twice" in capsys.readouterr().out

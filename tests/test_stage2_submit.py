"""Stage 2 through `ray job submit` on a real head node with token auth: same rows as a direct
run, and a kill -9 of the job's driver mid-run then a resubmit ends with those rows too.

Run it under ``flock /tmp/magref-ray-head.lock`` (it starts a head node).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_script
from stage2_media import make_clips, write_clips
from test_ray_job_submit import ADDRESS, BIN, head_node, pids_under  # noqa: F401 - head_node is a fixture

from pipelines.ledger import RunDir

# One clip per block and per model call: the job commits clip by clip (a kill lands
# between commits) and no clip's rows depend on which clips shared its batch.
ARGS = ["--models", "tiny", "--set", "filters.theta_min=0.001", "--set", "grounding.pool.batch_size=1",
        "--set", "segment.pool.batch_size=1", "--part-inputs", "1"]


def objects_of(run: Path) -> list[dict]:
    return sorted(RunDir.of(str(run)).read("objects").to_pylist(), key=lambda r: r["object_id"])


def submit(env: dict, run: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [str(BIN / "ray"), "job", "submit", "--address", env[ADDRESS], "--working-dir", ".", *extra, "--",
               "python", "pipelines/stage2_objects.py", "--run-dir", str(run), *ARGS]
    deadline = time.time() + 120
    while True:  # the head's job agent comes up a few seconds after `ray start` returns
        job = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent" not in job.stderr or time.time() > deadline:
            return job
        time.sleep(2)


@pytest.mark.slow
def test_stage2_by_ray_job_submit_matches_a_direct_run_and_survives_a_killed_driver(head_node, tmp_path):
    env, _ = head_node
    clips = make_clips(tmp_path / "media", videos=5, clips_per_video=2)
    runs = {name: tmp_path / name for name in ("direct", "submitted", "killed")}
    for run in runs.values():
        write_clips(run, clips)

    direct = run_script(["pipelines/stage2_objects.py", "--run-dir", str(runs["direct"]), *ARGS], timeout=600)
    assert direct.returncode == 0, direct.stdout[-3000:] + direct.stderr[-3000:]
    expected = objects_of(runs["direct"])
    assert expected

    job = submit(env, runs["submitted"])
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "every input accounted for" in job.stdout
    assert objects_of(runs["submitted"]) == expected

    # Kill -9 the driver once the first clip is committed, then submit again.
    started = submit(env, runs["killed"], "--no-wait")
    assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
    ledger = runs["killed"] / "_ledger" / "objects"
    deadline = time.time() + 300
    while not list(ledger.glob("part-*.parquet")) and time.time() < deadline:
        time.sleep(0.2)
    drivers = [pid for pid in pids_under(str(runs["killed"])) if b"stage2_objects.py" in
               Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert drivers, "the job's driver was not found"
    for pid in drivers:
        os.kill(pid, signal.SIGKILL)
    committed = len(list(ledger.glob("part-*.parquet")))
    kept = sum(1 for status in clips.column("status").to_pylist() if status == "kept")
    assert committed < kept, f"the job finished before the kill ({committed} of {kept} clips committed)"

    resumed = submit(env, runs["killed"])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "every input accounted for" in resumed.stdout and "already done" in resumed.stdout
    assert objects_of(runs["killed"]) == expected
    books = run_script(["-m", "pipelines.inspect_run", str(runs["killed"])])
    assert books.returncode == 0 and "books balance" in books.stdout, books.stdout + books.stderr

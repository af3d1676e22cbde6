"""The stage framework stages 2-4 copy: whole inputs, declared inputs, the lock, CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pytest
from conftest import run_script

from curation.envelope import to_table
from curation.images import encode_png
from curation.operator import ActorPool, TaskPool
from pipelines.cli import cli
from pipelines.job import StageJob
from pipelines.ledger import RunDir, commit
from pipelines.run_lock import StageLock
from pipelines.stages import STAGE
from pipelines.wiring import map_operator
from schemas import io as schemas_io
from schemas.tables import schema_for
from schemas.tables import CLIPS, INPUT, OBJECTS

# ----------------------------------------------------------------------------- whole inputs


class RowsSeen:
    """Records, per call, how many rows of each input it was handed (a stand-in GPU step)."""

    whole_inputs = False

    def __init__(self, tag: str):
        self.tag = tag

    def __call__(self, batch: pa.Table) -> pa.Table:
        counts: dict[str, int] = {}
        for input_id in batch.column(INPUT).to_pylist():
            counts[input_id] = counts.get(input_id, 0) + 1
        seen = pa.array([json.dumps(counts)] * batch.num_rows, pa.string())
        return batch.append_column(f"seen_{self.tag}", seen)


class WholeRowsSeen(RowsSeen):
    whole_inputs = True


def test_a_whole_input_operator_sees_every_row_of_a_clip_even_when_batches_cut_through_it(ray_session):
    import ray.data

    # One block: clip A has 3 rows, B 3, C 1. Batches of 2 rows cut A and B in the middle.
    rows = pa.table({INPUT: ["A", "A", "A", "B", "B", "B", "C"], "x": list(range(7))})
    ds = ray.data.from_arrow([rows])
    ds.context.target_max_block_size = None
    ds = map_operator(ds, RowsSeen, ActorPool(actors=1, batch_size=2), tag="rows")  # the control
    ds = map_operator(ds, WholeRowsSeen, ActorPool(actors=1, batch_size=2), tag="whole")
    ds = map_operator(ds, WholeRowsSeen, TaskPool(batch_size=1), tag="task")
    out = pa.concat_tables(list(ds.iter_batches(batch_size=None, batch_format="pyarrow")))

    assert sorted(out.column("x").to_pylist()) == list(range(7))  # nothing lost or doubled
    control = [json.loads(s) for s in out.column("seen_rows").to_pylist()]
    assert any(seen.get("A") == 2 or seen.get("B") in (1, 2) for seen in control), "batches did not cut a clip"
    expected = {"A": 3, "B": 3, "C": 1}
    for tag in ("whole", "task"):
        for input_id, seen in zip(out.column(INPUT).to_pylist(), out.column(f"seen_{tag}").to_pylist()):
            assert json.loads(seen)[input_id] == expected[input_id], (tag, input_id, seen)
    # batch_size counts inputs for a whole-input step: two inputs per actor call
    assert {len(json.loads(s)) for s in out.column("seen_whole").to_pylist()} <= {1, 2}
    assert {len(json.loads(s)) for s in out.column("seen_task").to_pylist()} == {1}


# ----------------------------------------------------------------------------- declared inputs


class ToyObjects:
    """A stage-2-shaped operator: one object row per clip, with PNG mask and reference."""

    def __init__(self, label: str = "ball"):
        self.label = label

    def __call__(self, batch: pa.Table) -> pa.Table:
        mask = np.zeros((8, 8), bool)
        mask[2:6, 2:6] = True
        rows = [{"object_id": f"{row['clip_id']}-0", "clip_id": row["clip_id"], "label": self.label, "frame": 0,
                 "box": [2.0, 2.0, 4.0, 4.0], "score": 0.9, "mask": encode_png(mask),
                 "ref": encode_png(np.zeros((4, 4, 4), np.uint8)), "area": 16, "solidity": 1.0, "face_iou": 0.0,
                 "status": "kept", INPUT: row[INPUT]} for row in batch.to_pylist()]
        return to_table(rows, OBJECTS)


@dataclass
class ToyConfig:
    objects: TaskPool = field(default_factory=lambda: TaskPool(batch_size=2))


def toy_stage2(argv: list[str]) -> int:
    job = StageJob(STAGE["objects"], ToyConfig, "toy stage 2", argv)
    with job:
        todo = job.pending(job.read_input())
        if todo.num_rows:
            ds = job.dataset(todo, rows_per_block=4)
            ds = map_operator(ds, ToyObjects, job.config.objects)
            job.write(ds)
    return 0 if job.report.accounted else 1


def clips_run(run_dir, kept: int, filtered: int) -> list[str]:
    """A run with a clips table (committed as stage 1 would) of kept and filtered clips."""
    rows, kept_ids = [], []
    for i in range(kept + filtered):
        status = "kept" if i < kept else ("motion", "too_short")[i % 2]
        cid = f"v{i % 3}-{i:04d}"
        rows.append({"clip_id": cid, "video_id": f"v{i % 3}", "uri": f"/media/v{i % 3}.mp4", "start_frame": i * 10,
                     "end_frame": i * 10 + 48, "start_s": i * 10 / 24, "end_s": (i * 10 + 48) / 24, "fps": 24.0,
                     "width": 64, "height": 48, "status": status, "caption": f"a ball {i}", "subjects": ["ball"],
                     INPUT: f"v{i % 3}"})
        if status == "kept":
            kept_ids.append(cid)
    commit(to_table(rows, CLIPS), str(run_dir), "clips", "clips")
    return kept_ids


def test_a_stage_reads_only_its_declared_inputs_and_columns(ray_session, tmp_path, monkeypatch, capsys):
    from pipelines import inspect_run

    run = tmp_path / "run"
    kept = clips_run(run, kept=5, filtered=4)
    reads: list[tuple[str, list[str] | None]] = []
    real_read = schemas_io.read_files  # every table read (read_table, read_manifest) goes through it

    def spy(fs, paths, kind, columns=None, filter=None, *args, **kwargs):
        paths = list(paths)
        wanted = list(columns or schema_for(kind).names)  # None reads every column of the schema
        needed = wanted + [c for c, _, _ in filter or [] if c not in wanted]
        reads.extend((str(path), needed) for path in paths)
        return real_read(fs, paths, kind, columns, filter, *args, **kwargs)

    monkeypatch.setattr(schemas_io, "read_files", spy)
    assert toy_stage2(["--run-dir", str(run)]) == 0
    assert "== stage objects: 5 inputs, 0 already done, 5 processed" in capsys.readouterr().out

    objects = RunDir.of(str(run)).read("objects")
    assert sorted(objects.column("clip_id").to_pylist()) == sorted(kept)  # filtered clips never processed
    clip_reads = [columns for path, columns in reads if "/clips/" in path]
    assert clip_reads and all(columns == list(STAGE["objects"].input_columns) + ["status"]
                              for columns in clip_reads), clip_reads  # projection + the filter's column

    reads.clear()
    books = inspect_run.inspect(RunDir.of(str(run)))
    assert books["ok"], books["problems"]
    assert books["stages"]["objects"]["inputs"] == 5 and books["stages"]["objects"]["not_yet_run"] == 0
    images = {"mask", "ref", "crop", "background", "embedding", "faces", "objects"}
    for path, columns in reads:  # the driver never read an image column of any table
        assert columns is not None and not images & set(columns), (path, columns)

    # A rerun reads the same declaration and finds nothing to do.
    assert toy_stage2(["--run-dir", str(run)]) == 0
    assert "5 already done, 0 processed" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the lock


def test_a_second_job_of_a_stage_refuses_while_the_first_holds_the_lock(tmp_path, capsys):
    run = tmp_path / "run"
    clips_run(run, kept=2, filtered=0)
    holder = StageLock(RunDir.of(str(run)).root, "objects")
    holder.acquire()  # this test process: alive, so the lock is not stale
    try:
        assert cli(toy_stage2, ["--run-dir", str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert f"stage 'objects' is already running (pid {os.getpid()}" in err
        assert not (run / "objects").exists()  # refused before touching anything
    finally:
        holder.release()
    assert not (run / "_locks" / "objects.lock").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(ray_session, tmp_path, capsys):
    run = tmp_path / "run"
    clips_run(run, kept=2, filtered=1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = run / "_locks" / "objects.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout), "process_start": "1",
                                "started": "2026-01-01T00:00:00+00:00"}))
    assert toy_stage2(["--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"took over the lock of a job that is gone (pid {int(dead.stdout)}" in out
    assert RunDir.of(str(run)).read("objects").num_rows == 2 and not lock.exists()


# ----------------------------------------------------------------------------- CLI errors


def one_line_error(result, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.slow
def test_user_mistakes_are_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("scenes: [unclosed\n")
    cases = [
        (["pipelines/stage1_clips.py", "--run-dir", str(empty), "--models", "tiny"],
         ["has no videos table", f"run pipelines/stage0_probe.py --run-dir {empty} --input VIDEOS first"]),
        (["pipelines/stage0_probe.py", "--input", "/no/such/dir", "--run-dir", str(tmp_path / "r")],
         ["/no/such/dir", "no such file, folder or glob"]),
        (["pipelines/stage1_clips.py", "--run-dir", str(empty), "--config", str(bad_yaml)],
         ["bad.yaml", "not valid YAML"]),
        (["pipelines/stage1_clips.py", "--run-dir", str(empty), "--config", str(tmp_path / "nope.yaml")],
         ["nope.yaml", "no such file"]),
        (["pipelines/stage1_clips.py", "--run-dir", str(empty), "--models", "captionr=tiny"],
         ["unknown model role 'captionr'", "known roles"]),
        (["pipelines/stage1_clips.py", "--run-dir", str(empty), "--models", "captioner=/no/model/dir"],
         ["/no/model/dir", "does not exist"]),
        (["pipelines/stage1_clips.py", "--run-dir", str(empty), "--set", "scenes.pool.actors=2"],
         ["'scenes.pool.actors' has no effect here"]),
        (["pipelines/run_all.py", "--run-dir", str(tmp_path / "r2")], ["--input is required"]),
        (["pipelines/inspect_run.py", str(tmp_path / "nowhere")], ["no such run directory"]),
    ]
    for args, needles in cases:
        one_line_error(run_script(args, timeout=120), *needles)


def test_help_lists_keys_and_print_config_reads_back(tmp_path):
    result = run_script(["pipelines/stage1_clips.py", "--help"], timeout=120)
    assert result.returncode == 0
    for needle in ("caption.pool.batch_size", "caption.decode_pool.num_cpus", "shorter scenes become too_short rows",
                   "quality.pool.num_gpus"):
        assert needle in result.stdout
    printed = run_script(["pipelines/stage1_clips.py", "--print-config", "--set", "scenes.min_seconds=3",
                          "--set", "caption.pool.actors=2"], timeout=120)
    assert printed.returncode == 0, printed.stderr
    path = tmp_path / "resolved.yaml"
    path.write_text(printed.stdout)
    again = run_script(["pipelines/stage1_clips.py", "--print-config", "--config", str(path)], timeout=120)
    assert again.returncode == 0 and again.stdout == printed.stdout
    assert "min_seconds: 3.0" in printed.stdout

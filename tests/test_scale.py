"""Scale: stage 4's lookups open each part a bounded number of times per job, not per task."""

from __future__ import annotations

import collections
import json
import multiprocessing
import shutil
import subprocess
import sys
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from conftest import script_env
from scale_data import build_run
from training_data import sample_row

from curation.envelope import to_table
from curation.pairs.assemble import AssembleConfig, assemble_sample, best_face_per_identity
from curation.pairs.cross_clip import best_partners
from pipelines.cli import cli
from pipelines.compact import STOP_AT
from pipelines.compact import main as compact_main
from pipelines.inspect_run import inspect
from pipelines.joins import FACE_COLUMNS, OBJECT_COLUMNS, PAIR_COLUMNS, ClipReferences, ClipSamples
from pipelines.ledger import RunDir
from pipelines.run_lock import update_run_record
from pipelines.stage2_objects import main as objects_main
from model.train.samples_reader import SamplesTable
from schemas.io import Location
from schemas.tables import INPUT, SAMPLES, key_of, schema_for


class CountingHandler(pafs.FSSpecHandler):
    """The local filesystem, counting every file opened for reading."""

    def __init__(self) -> None:
        super().__init__(fsspec.filesystem("file"))
        self.opens: collections.Counter = collections.Counter()

    def open_input_file(self, path):
        self.opens[path] += 1
        return super().open_input_file(path)

    def open_input_stream(self, path):
        self.opens[path] += 1
        return super().open_input_stream(path)


def by_clip(table: pa.Table) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        grouped.setdefault(row["clip_id"], []).append(row)
    return grouped


def test_stage4_lookups_open_each_part_a_bounded_number_of_times_per_job(tmp_path):
    clips, per_part, per_task = 240, 2, 3  # 120 parts per table; 80 tasks that straddle parts
    run, rows = build_run(str(tmp_path / "run"), clips, clips_per_part=per_part, png_side=8)
    handler = CountingHandler()
    counted = RunDir(Location(pafs.PyFileSystem(handler), run.root.path))
    todo = pa.Table.from_pylist(rows).append_column(INPUT, pa.array([r["clip_id"] for r in rows]))

    config = AssembleConfig()
    todo = ClipSamples.lookups(counted, todo, config.cross_clip_variants)  # the driver, once per job
    step = ClipSamples(counted, config)
    samples = [row for start in range(0, clips, per_task) for row in step(todo.slice(start, per_task)).to_pylist()]
    references, refs_todo = ClipReferences(counted), ClipReferences.lookups(counted, todo)
    requests = [r for start in range(0, clips, per_task)
                for r in references(refs_todo.slice(start, per_task)).to_pylist()]
    assert requests  # the references step ran on the same lookups

    parts = {kind: {p for p in handler.opens if f"/{kind}/" in p} for kind in ("faces", "objects", "pairs")}
    assert all(len(found) == clips // per_part for found in parts.values()), {k: len(v) for k, v in parts.items()}
    # A read opens a file twice (footer, then data). Per job: at most 4 index scans of a
    # table; per task: the files of its own clips and its partners', and a part is touched
    # by at most 2 tasks of each step here: so <= 2 * (4 + 2 * 3 + 2) = 24 opens, whatever
    # the number of tasks (80 here; the per-task scan opened every part >= 2 x 80 times).
    worst = max(handler.opens[p] for found in parts.values() for p in found)
    assert worst <= 24, worst

    # The same samples as assemble_sample called per clip, in-process, on the same rows.
    faces = by_clip(run.read("faces", FACE_COLUMNS))
    objects = by_clip(run.read("objects", OBJECT_COLUMNS))
    pairs = by_clip(run.read("pairs", PAIR_COLUMNS))
    partners = best_partners(run.read("cross_pairs").to_pylist())
    partner_faces = best_face_per_identity([f for found in faces.values() for f in found])
    expected = {}
    for clip in rows:
        row = assemble_sample(clip, faces.get(clip["clip_id"], []), objects.get(clip["clip_id"], []),
                              pairs.get(clip["clip_id"], []), partner_faces, config, partners)
        expected[row["sample_id"]] = row
    got = {s["sample_id"]: s for s in samples if s.get("status") == "kept"}
    assert len(got) == clips and got.keys() == expected.keys()
    assert any(f["variant_source"] == "cross_clip" for s in got.values() for f in s["faces"])
    want = to_table([{**row, "status": "kept"} for row in expected.values()], SAMPLES).sort_by("sample_id")
    mine = to_table(list(got.values()), SAMPLES).sort_by("sample_id")
    for name in SAMPLES.names:  # the record; the envelope columns differ by construction
        assert mine.column(name).equals(want.column(name)), name


def _finish_stage(root: str, stage: str, times: int) -> None:
    for n in range(times):
        update_run_record(Location.of(root), lambda state: state.setdefault("stages", {}).setdefault(
            stage, {}).update({"runs": n + 1}))


def test_two_stages_finishing_at_once_both_appear_in_run_json(tmp_path):
    ctx = multiprocessing.get_context("fork")
    jobs = [ctx.Process(target=_finish_stage, args=(str(tmp_path), stage, 25)) for stage in ("objects", "faces")]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(60)
    assert [job.exitcode for job in jobs] == [0, 0]
    stages = json.loads((tmp_path / "run.json").read_text())["stages"]
    assert stages == {"objects": {"runs": 25}, "faces": {"runs": 25}}
    assert not (tmp_path / "_locks" / "run.json.lock").exists()


def snapshot(run: RunDir) -> dict:
    """Every row of the stage tables, errors and ledgers (less the ledger's part names), sorted."""
    found = {kind: run.read(kind).sort_by(key_of(kind)) for kind in ("faces", "objects", "pairs", "cross_pairs")}
    for stage in ("faces", "objects", "pairs", "cross_clip"):
        found[f"ledger/{stage}"] = run.read_ledger(stage).drop_columns(["part"]).sort_by("input")
    found["errors"] = run.read("errors").sort_by([("stage", "ascending"), ("input", "ascending")])
    return found


def parts(root, table: str) -> list[str]:
    return sorted(p.name for p in (root / table).glob("*.parquet"))


def compact(root, *extra: str, stop_at: str | None = None) -> subprocess.CompletedProcess:
    env = script_env()
    if stop_at:
        env[STOP_AT] = stop_at
    return subprocess.run([sys.executable, "-m", "pipelines.compact", "--run-dir", str(root), "--target-mb", "0.1",
                           *extra], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("compact") / "run"
    run, _ = build_run(str(root), 48, clips_per_part=2, png_side=8)
    return root, snapshot(run)


def test_compaction_keeps_every_row_and_the_books_and_a_rerun_does_nothing(small_run, tmp_path, capsys):
    source, before = small_run
    root = tmp_path / "run"
    shutil.copytree(source, root)
    run = RunDir.of(str(root))
    assert len(parts(root, "faces")) == 24
    assert cli(compact_main, ["--run-dir", str(root), "--target-mb", "0.1"]) == 0
    after = parts(root, "faces")
    assert 1 < len(after) < 8 and all("-merged-" in p for p in after), after
    assert len(parts(root, "_ledger/faces")) < 4
    got = snapshot(run)
    assert got.keys() == before.keys() and all(got[k].equals(before[k]) for k in before)
    assert inspect(run)["ok"], inspect(run)["problems"]
    # each merged file is sorted by id
    for name in after:
        ids = pq.read_table(root / "faces" / name, columns=["face_id"]).column("face_id").to_pylist()
        assert ids == sorted(ids)
    # a stage rerun after compaction finds every input done and deletes nothing
    ledger_files = parts(root, "_ledger/objects")
    assert cli(objects_main, ["--run-dir", str(root), "--models", "tiny"]) == 0
    assert "0 processed" in capsys.readouterr().out
    assert parts(root, "_ledger/objects") == ledger_files
    assert all(snapshot(run)[k].equals(before[k]) for k in before)
    assert cli(compact_main, ["--run-dir", str(root), "--table", "nope"]) == 2


@pytest.mark.parametrize("stop_at", ["written", "committed", "half"])
def test_kill_9_during_compaction_leaves_one_whole_set_and_a_rerun_finishes(small_run, tmp_path, stop_at):
    source, before = small_run
    root = tmp_path / "run"
    shutil.copytree(source, root)
    run = RunDir.of(str(root))
    killed = compact(root, "--table", "faces", stop_at=stop_at)
    assert killed.returncode == -9, killed.stderr
    got = snapshot(run)  # our readers, mid-swap: old parts or new, never both or neither
    assert all(got[k].equals(before[k]) for k in before), stop_at
    assert cli(compact_main, ["--run-dir", str(root), "--table", "faces", "--target-mb", "0.1"]) == 0
    assert all(snapshot(run)[k].equals(before[k]) for k in before)
    assert not list((root / "faces").glob("_compact-*")) and not list((root / "faces").glob(".*.tmp"))
    assert all("-merged-" in p for p in parts(root, "faces")) and inspect(run)["ok"]


def test_samples_reader_holds_at_most_k_row_groups_and_deals_them_to_ranks(tmp_path):
    frames = [np.full((48, 64, 3), i, np.uint8) for i in range(4)]
    rows = [sample_row(f"s{i:04d}", "/videos/none.mp4", frames) for i in range(240)]
    folder = tmp_path / "samples"
    folder.mkdir()
    for n in range(3):  # three parts of 80 rows, row groups of 8: 30 row groups
        part = pa.Table.from_pylist(rows[n::3], schema=schema_for("samples"))
        pq.write_table(part, folder / f"part-{n}.parquet", row_group_size=8)
    table = SamplesTable(str(folder))
    assert len(table) == 240 and table.row_groups == 30 and table.row_group_reads == 0  # the index reads ids only
    assert table.index_of("s0100") == 100 and table.row(100)["sample_id"] == "s0100"
    assert [table.index_of(f"s{i:04d}") for i in (0, 239)] == [0, 239]
    with pytest.raises(KeyError):
        table.index_of("s0100x")
    seen = []
    for rank in range(3):
        reader = SamplesTable(str(folder))
        share = reader.epoch_order(seed=5, epoch=0, rank=rank, world=3)
        assert [reader.row(int(i))["sample_id"] for i in share] == [reader.sample_id(int(i)) for i in share]
        assert reader.most_held <= reader.max_row_groups == 4
        assert reader.row_group_reads == 10  # its own 10 row groups, each read once in the epoch
        assert reader.footer_reads <= 3  # each part's footer parsed once while it stays open, not per row group
        seen += [reader.sample_id(int(i)) for i in share]
    assert sorted(seen) == [r["sample_id"] for r in rows]  # disjoint shares that cover the table
    again = SamplesTable(str(folder))
    assert np.array_equal(again.epoch_order(5, 0, 1, 3), SamplesTable(str(folder)).epoch_order(5, 0, 1, 3))
    assert not np.array_equal(again.epoch_order(5, 1, 1, 3), again.epoch_order(5, 0, 1, 3))

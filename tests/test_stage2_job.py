"""Stage 2 as a Ray Data job on generated clips with tiny models: valid rows, books, errors, resume."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from stage2_media import make_clips, write_clips

from pipelines.inspect_run import main as inspect_main
from pipelines.ledger import RunDir
from pipelines.stage2_objects import main as objects
from schemas.validate import validate

TINY = ["--models", "tiny", "--set", "filters.theta_min=0.001"]
ONE_CLIP_PER_CALL = ["--set", "grounding.pool.batch_size=1", "--set", "segment.pool.batch_size=1"]


def sorted_rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: r["object_id"])


def test_stage2_job_writes_valid_objects_of_kept_clips_and_balances(ray_session, tmp_path, capsys):
    clips = make_clips(tmp_path / "media", videos=3, clips_per_video=2)
    run = tmp_path / "run"
    write_clips(run, clips)
    kept = set(clips.filter(pc.equal(clips.column("status"), "kept")).column("clip_id").to_pylist())
    assert 0 < len(kept) < clips.num_rows

    assert objects(["--run-dir", str(run), *TINY]) == 0
    report = capsys.readouterr().out
    assert f"== stage objects: {len(kept)} inputs" in report and "every input accounted for" in report

    rundir = RunDir.of(str(run))
    table = rundir.read("objects")
    for path in sorted((run / "objects").glob("*.parquet")):
        validate(pq.read_table(path), "objects", source=str(path))
    assert table.num_rows > 0
    assert set(table.column("clip_id").to_pylist()) <= kept  # filtered clips are no stage-2 input
    assert len(set(table.column("object_id").to_pylist())) == table.num_rows
    assert set(table.column("status").to_pylist()) <= {"kept", "too_small", "irregular", "overlaps_face",
                                                        "duplicate"}
    assert not rundir.has("errors") or not rundir.read("errors").num_rows
    ledger = rundir.read_ledger("objects")
    assert set(ledger.column("input").to_pylist()) == kept

    assert inspect_main([str(run)]) == 0
    books = capsys.readouterr().out
    assert f"objects  {len(kept)} inputs: {len(kept)} finished" in books and "books balance" in books

    # A rerun finds nothing to do and adds no row.
    assert objects(["--run-dir", str(run), *TINY]) == 0
    assert f"{len(kept)} already done" in capsys.readouterr().out
    assert sorted_rows(rundir.read("objects")) == sorted_rows(table)


@pytest.mark.slow
def test_a_malformed_label_answer_is_an_error_row_and_the_other_clips_are_whole(ray_session, tmp_path, capsys):
    clips = make_clips(tmp_path / "media", videos=3, clips_per_video=2)
    rows = clips.to_pylist()
    bad = next(r for r in rows if r["status"] == "kept")
    bad["subjects"] = []  # the label pass asks the (tiny, random) Qwen2.5-VL, whose answer is no JSON
    with_bad = pa.Table.from_pylist(rows, schema=clips.schema)
    without = with_bad.filter(pc.not_equal(with_bad.column("clip_id"), bad["clip_id"]))
    write_clips(tmp_path / "a", with_bad)
    write_clips(tmp_path / "b", without)

    args = [*TINY, *ONE_CLIP_PER_CALL, "--set", "labels.from_caption=true", "--set", "labels.max_new_tokens=12"]
    assert objects(["--run-dir", str(tmp_path / "a"), *args]) == 0
    assert objects(["--run-dir", str(tmp_path / "b"), *args]) == 0
    capsys.readouterr()

    a, b = RunDir.of(str(tmp_path / "a")), RunDir.of(str(tmp_path / "b"))
    errors = a.read("errors").to_pylist()
    assert [(e["stage"], e["input"], e["error_type"]) for e in errors] == [
        ("objects", bad["clip_id"], "MalformedLabelAnswer")]
    assert f"clip {bad['clip_id']}" in errors[0]["message"]
    assert bad["clip_id"] not in a.read("objects").column("clip_id").to_pylist()
    # Every other clip's objects are all there, exactly as in a run without the bad clip.
    assert b.read("objects").num_rows > 0
    assert sorted_rows(a.read("objects")) == sorted_rows(b.read("objects"))
    assert inspect_main([str(tmp_path / "a")]) == 0
    assert "1 errors" in capsys.readouterr().out

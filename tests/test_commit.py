"""The writer's contract, without Ray: one block in, table + errors + ledger parts out."""

import json

from curation.envelope import empty_row, error_row, to_table
from pipelines.ledger import RunDir, clean_orphans, commit
from schemas.tables import CLIPS


def clip(video, start, status="kept"):
    return {"clip_id": f"{video}-{start}", "video_id": video, "uri": f"/{video}.mp4", "start_frame": start,
            "end_frame": start + 48, "start_s": start / 24, "end_s": (start + 48) / 24, "fps": 24.0,
            "status": status, "_input": video}


def test_commit_splits_rows_and_a_failed_input_keeps_only_its_error(tmp_path):
    rows = [clip("a", 0), clip("a", 48, "motion"), error_row("a", RuntimeError("a: decode failed at frame 60")),
            clip("b", 0), clip("b", 48, "too_short"), empty_row("c")]
    summary = commit(to_table(rows, CLIPS), str(tmp_path), "clips", "clips").to_pylist()[0]
    run = RunDir.of(str(tmp_path))

    assert sorted(run.read("clips").column("clip_id").to_pylist()) == ["b-0", "b-48"]
    errors = run.read("errors").to_pylist()
    assert [(e["stage"], e["input"], e["error_type"]) for e in errors] == [("clips", "a", "RuntimeError")]
    assert "frame 60" in errors[0]["message"] and "RuntimeError" in errors[0]["traceback"]
    ledger = {row["input"]: row for row in run.read_ledger("clips").to_pylist()}
    assert set(ledger) == {"a", "b", "c"}
    assert ledger["a"]["error_type"] == "RuntimeError" and ledger["a"]["rows"] == 0
    assert json.loads(ledger["b"]["statuses"]) == {"kept": 1, "too_short": 1}
    assert ledger["c"]["rows"] == 0 and ledger["c"]["error_type"] is None
    assert (summary["inputs"], summary["empty"], json.loads(summary["errors"])) == (3, 1, {"RuntimeError": 1})

    # The same block again (a Ray task retry) rewrites the same parts: no duplicate.
    commit(to_table(rows, CLIPS), str(tmp_path), "clips", "clips")
    assert run.read("clips").num_rows == 2 and run.read_ledger("clips").num_rows == 3


def test_parts_without_a_ledger_entry_are_removed_on_start(tmp_path):
    commit(to_table([clip("a", 0)], CLIPS), str(tmp_path), "clips", "clips")
    # A killed job: its table part landed, its ledger part did not.
    orphan = tmp_path / "clips" / "part-clips-0123456789abcdef0123.parquet"
    orphan.write_bytes((tmp_path / "clips").glob("part-*.parquet").__next__().read_bytes())
    (tmp_path / "clips" / ".part-x-1.tmp").write_bytes(b"half")
    assert clean_orphans(RunDir.of(str(tmp_path)), "clips", "clips") == 2
    assert RunDir.of(str(tmp_path)).read("clips").num_rows == 1
    assert not orphan.exists()

"""The writer's contract, without Ray: one block in, table + errors + ledger parts out."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from curation.envelope import empty_row, error_row, to_table
from pipelines.ledger import RunDir, clean_orphans, commit, commit_grouped, pack_block
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


def _books(run: RunDir) -> tuple:
    ledger = sorted((r["input"], r["rows"], r["statuses"], r["error_type"]) for r in run.read_ledger("clips").to_pylist())
    return sorted(run.read("clips").column("clip_id").to_pylist()), ledger, run.read("errors").column("input").to_pylist()


def test_packed_blocks_commit_in_parts_of_at_most_n_inputs_or_m_megabytes(tmp_path):
    """Two blocks, folded to one row per input as Ray hands them to ``commit_grouped``: the
    parts hold at most ``part_inputs`` inputs, fewer when ``part_mb`` is reached, and the rows and
    books equal a plain one-block commit of the same rows."""
    first = [clip("a", 0), clip("a", 48, "motion"), error_row("b", RuntimeError("b: broken")), clip("b", 0),
             empty_row("c")]
    second = [clip(v, s) for v in ("d", "e", "f", "g") for s in (0, 48)]
    expected = tmp_path / "one"
    commit(to_table(first + second, CLIPS), str(expected), "clips", "clips")

    packed = pa.concat_tables([pack_block(to_table(first, CLIPS), "clips"),
                               pack_block(to_table(second, CLIPS), "clips")], promote_options="permissive")
    assert packed.num_rows == 7 and packed.column_names.count("_input") == 1  # one row per input
    for name, limits, parts in (("n3", (3, 256.0), 3), ("tiny_mb", (100, 1e-6), 7), ("all", (100, 256.0), 1)):
        run = tmp_path / name
        summaries = commit_grouped(packed, str(run), "clips", "clips", *limits)
        assert sum(summaries.column("inputs").to_pylist()) == 7
        ledger_parts = list((run / "_ledger" / "clips").glob("part-*.parquet"))
        assert len(ledger_parts) == parts, name
        assert max(pq.read_metadata(path).num_rows for path in ledger_parts) <= limits[0]
        assert _books(RunDir.of(str(run))) == _books(RunDir.of(str(expected))), name
        assert len(list((run / "clips").glob("part-*.parquet"))) <= parts

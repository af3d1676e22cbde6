"""A SIGKILLed OpenS2V import resumes to exactly the rows of an uninterrupted one.

The import commits table by table per block of keys (``probe``, ``clips``, ``objects``,
``pairs``, then the keys' ``imports`` rows), so a kill can land between any two commits;
the rerun must skip what each ledger holds and add what it lacks, once.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import ROOT, run_script, start_script
from curation.opens2v.synthetic import build
from pipelines import import_opens2v
from pipelines.ledger import RunDir
from schemas.tables import key_of

KEYS = 4  # one video each, plus the fixture's four broken keys
TABLES = ("videos", "clips", "objects", "pairs", "cross_pairs", "imports", "samples")
LEDGERS = ("probe", "clips", "objects", "pairs", "opens2v", "opens2v_cross", "samples")


def _args(files: dict, run) -> list[str]:
    return [str(ROOT / "pipelines" / "import_opens2v.py"), "--json", str(files["json"]),
            "--videos", str(files["videos"]), "--backgrounds", str(files["backgrounds"]),
            "--views", str(files["views"]), "--pairs", str(files["pairs"]), "--run-dir", str(run),
            "--set", "opens2v.pool.batch_size=1", "--set", "faces=false", "--part-inputs", "1"]


def _rows(run: RunDir) -> dict[str, list]:
    """Every table's rows and every ledger's inputs, sorted, less what names a part file."""
    found: dict[str, list] = {}
    for kind in TABLES:
        table = run.read(kind)
        found[kind] = sorted(table.drop_columns([c for c in table.column_names if c == "part"]).to_pylist(),
                             key=lambda r, k=key_of(kind): str(r[k]))
    for stage in LEDGERS:
        found[f"ledger/{stage}"] = sorted(run.read_ledger(stage).column("input").to_pylist())
    errors = run.read("errors")
    found["errors"] = sorted(zip(errors.column("stage").to_pylist(), errors.column("input").to_pylist()))
    return found


@pytest.mark.slow
def test_killed_import_resumes_with_the_rows_of_an_uninterrupted_one(tmp_path, ray_session) -> None:
    files = build(tmp_path / "part", keys=KEYS)
    assert import_opens2v.main(_args(files, tmp_path / "whole")[1:]) == 0  # the reference, on the test's Ray

    run = tmp_path / "run"
    proc = start_script(_args(files, run))
    ledger = run / "_ledger" / "opens2v"
    deadline = time.time() + 300  # a loaded machine starts Ray slowly
    while time.time() < deadline and len(list(ledger.glob("part-*.parquet"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = RunDir.of(str(run)).read_ledger("opens2v").num_rows
    assert 0 < committed < KEYS + 4, "the kill must land mid-import for this test to mean anything"
    assert not (run / "samples").exists() or not list((run / "samples").glob("*.parquet"))

    result = run_script(_args(files, run), timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed, expected = _rows(RunDir.of(str(run))), _rows(RunDir.of(str(tmp_path / "whole")))
    for kind in TABLES:
        ids = [str(r[key_of(kind)]) for r in resumed[kind]]
        assert len(ids) == len(set(ids)), f"duplicate {kind} ids after the resume"
    assert resumed == expected
    books = run_script(["-m", "pipelines.inspect_run", "--run-dir", str(run)], timeout=120)
    assert books.returncode == 0 and "books balance" in books.stdout, books.stdout[-3000:]

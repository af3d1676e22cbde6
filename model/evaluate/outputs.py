"""What an evaluation leaves behind, written the same way by the command and the Ray job."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from model.evaluate.entries import Entry
from model.evaluate.opens2v import merged_total, read_folder, total_notes, write_jsons
from model.evaluate.page import render
from model.evaluate.summary import summarize
from schemas.tables import SCORES


def write_outputs(rows: list[dict], entries: Iterable[Entry], out: Path, domain: str, html_path: str | None,
                  scores_file: bool = True, version: str = "1.0") -> dict:
    """scores.parquet (unless the caller keeps its own table), summary.json, opens2v/*.json (in
    OpenS2V-Eval harness ``version``'s layout), opens2v_total.json, and the page when
    ``html_path`` is given."""
    out.mkdir(parents=True, exist_ok=True)
    if scores_file:
        pq.write_table(pa.Table.from_pylist(rows, schema=SCORES), out / "scores.parquet")
    summary = summarize(rows)
    write_jsons(rows, out / "opens2v", version)
    merged = read_folder(out / "opens2v")
    summary["opens2v"] = merged_total(merged, domain, version)
    summary["opens2v_notes"] = {"version": version, **total_notes(merged, domain, version)}
    (out / "opens2v_total.json").write_text(json.dumps(summary["opens2v"], indent=4))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if html_path:
        Path(html_path).write_text(render(entries, rows, summary, f"evaluation of {out}"))
    return summary

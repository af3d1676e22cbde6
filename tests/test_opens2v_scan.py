"""The importer's driver finds each key of a part JSON by byte offset in one streaming pass.

No Ray: ``curation/opens2v/scan.py`` and ``pipelines.import_opens2v.read_keys`` only. The
values hold what breaks naive scanners (braces and quotes inside strings, escapes,
non-ASCII text whose byte and character offsets differ), and the chunk is smaller than a
value, so every key straddles a chunk boundary somewhere.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

from curation.opens2v import scan
from curation.opens2v.scan import read_span, scan_part
from pipelines import import_opens2v


def _values(n: int, pad: int = 0) -> dict:
    return {f"key{k}": {"metadata": {"path": f"v{k % 3}.mp4", "face_cap_qwen": f"Zoë und 中文 {{\"}}\\ [{k}]"},
                        "annotation": {"mask_annotation": {"3": {"1": "{'counts': 'a\"}{\\\\'" + "x" * pad}},
                                       "list": [1, 2.5, None, True, {"}": "{"}]}}
            for k in range(n)}


def _write(path: Path, values: dict) -> bytes:
    data = json.dumps(values, indent=1, ensure_ascii=False).encode()
    path.write_bytes(data)
    return data


def test_spans_read_back_each_value_exactly(tmp_path: Path) -> None:
    values = _values(12)
    path = tmp_path / "part.json"
    _write(path, values)
    spans = list(scan_part(str(path), chunk=37))
    assert [s.key for s in spans] == list(values) and not any(s.error for s in spans)
    for span in spans:
        assert json.loads(read_span(str(path), span.offset, span.length)) == values[span.key]
        assert span.path == values[span.key]["metadata"]["path"]


def test_a_file_cut_anywhere_keeps_the_keys_before_the_cut_and_names_the_byte(tmp_path: Path) -> None:
    values = _values(4)
    whole = tmp_path / "whole.json"
    data = _write(whole, values)
    ends = {s.key: s.offset + s.length for s in scan_part(str(whole))}
    closing = data.rindex(b"}")
    path = tmp_path / "cut.json"
    for cut in range(1, len(data)):
        path.write_bytes(data[:cut])
        spans = list(scan_part(str(path), chunk=16))
        good = [s for s in spans if not s.error]
        assert [s.key for s in good] == [k for k in values if ends[k] <= cut], cut
        for span in good:
            assert json.loads(read_span(str(path), span.offset, span.length)) == values[span.key]
        errors = [s for s in spans if s.error]
        assert len(errors) == (cut <= closing), cut  # only a file that keeps its closing brace is whole
        for error in errors:
            assert str(path) in error.error and f"byte {error.offset}" in error.error and error.offset <= cut


def test_the_driver_holds_a_chunk_not_the_file(tmp_path: Path, monkeypatch) -> None:
    """``read_keys`` (the driver) on an 8 MB part with 64 KiB chunks: its peak Python memory
    stays far below the file's size (reading the file whole, as before, holds all of it)."""
    values = _values(400, pad=20_000)
    path = tmp_path / "part.json"
    size = len(_write(path, values))
    assert size > 8_000_000
    monkeypatch.setattr(scan, "CHUNK", 64 << 10)
    tracemalloc.start()
    try:
        keys = import_opens2v.read_keys(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert keys.num_rows == 400 and keys.column("parse_error").null_count == 400
    assert peak < size / 5, f"the driver peaked at {peak} bytes for a {size}-byte part"
    row = keys.to_pylist()[0]
    assert json.loads(read_span(str(path), row["offset"], row["length"])) == values[row["key"]]

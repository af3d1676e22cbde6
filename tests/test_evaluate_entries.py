"""Evaluation entries stream: the driver's index holds ids and places, the scoring task reads the images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.images import decode_png, encode_png
from model.evaluate import entries as entries_module
from model.evaluate.entries import (
    ENTRY_SCHEMA,
    index_entries,
    iter_entries,
    read_entries,
)
from schemas import schema_for

ROWS, ROW_GROUP = 12, 5


def bytes_read() -> int:
    """This process's bytes read through read syscalls so far (Linux ``/proc/self/io``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def samples_table(path: Path) -> list[bytes]:
    """A samples file whose PNG references (noise: incompressible) are almost all of its bytes."""
    rng = np.random.default_rng(0)
    pngs = [encode_png(rng.integers(0, 255, (160, 160, 3)).astype(np.uint8)) for _ in range(ROWS)]
    base = {"clip_id": "c", "uri": "/v.mp4", "start_frame": 0, "end_frame": 48, "fps": 24.0, "provenance": "{}"}
    rows = [{**base, "sample_id": f"s{i:02d}", "caption": f"a man and a dog {i}", "subject_words": ["man", "dog"],
             "faces": [{"identity_id": "i0", "label": "man", "ref": pngs[i], "variant": None, "source_id": "f0"}],
             "objects": [{"label": "dog", "ref": pngs[(i + 1) % ROWS], "variant": pngs[0], "source_id": "o0"}],
             "background": pngs[(i + 2) % ROWS] if i % 2 else None} for i in range(ROWS)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema_for("samples")), path, row_group_size=ROW_GROUP)
    return pngs


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io to count bytes read")
def test_samples_index_reads_ids_and_captions_only_and_the_task_reads_each_row_group_once(tmp_path, monkeypatch):
    path = tmp_path / "samples.parquet"
    pngs = samples_table(path)
    size = path.stat().st_size
    index_entries(str(path), str(tmp_path / "videos"))  # warm-up: imports and first-use costs are not the index's
    before = bytes_read()
    index = index_entries(str(path), str(tmp_path / "videos"))
    read = bytes_read() - before
    meta = pq.ParquetFile(path).metadata
    chunks = [meta.row_group(g).column(c) for g in range(meta.num_row_groups) for c in range(meta.num_columns)]
    text = sum(c.total_compressed_size for c in chunks if c.path_in_schema in ("sample_id", "caption"))
    assert text < 0.01 * size  # the PNGs are the file
    assert 0 < read < 0.1 * size, f"the index read {read} of {size} bytes"
    assert index.schema == ENTRY_SCHEMA and index.num_rows == ROWS
    assert index.column("refs").null_count == ROWS and index.column("ref_files").null_count == ROWS
    assert index.nbytes < 0.05 * size
    assert index.column("samples_row_group").to_pylist() == [i // ROW_GROUP for i in range(ROWS)]
    assert index.column("prompt")[7].as_py() == "a man and a dog 7"

    opened = []
    real = entries_module.pq.ParquetFile

    class Counting(real):
        def read_row_group(self, i, *args, **kwargs):
            opened.append((i, tuple(kwargs.get("columns") or ())))
            return super().read_row_group(i, *args, **kwargs)

    monkeypatch.setattr(entries_module.pq, "ParquetFile", Counting)
    got = list(iter_entries(index, chunk=ROWS))  # one scoring batch holding all three row groups
    assert [i for i, _ in opened] == [0, 1, 2] and "caption" not in opened[0][1]
    assert [e.key for e in got] == [f"s{i:02d}" for i in range(ROWS)] and not any(e.error for e in got)
    seven = got[7]
    assert [(r.label, r.kind) for r in seven.refs] == [("man", "face"), ("dog", "object"), (None, "background")]
    assert np.array_equal(seven.refs[0].image, decode_png(pngs[7], "RGB"))
    assert np.array_equal(seven.refs[2].image, decode_png(pngs[9], "RGB"))
    assert [r.kind for r in got[2].refs] == ["face", "object"]


def test_samples_rewritten_after_indexing_is_that_entrys_error(tmp_path):
    path = tmp_path / "samples.parquet"
    samples_table(path)
    index = index_entries(str(path), str(tmp_path / "videos"))
    table = pq.read_table(path)
    pq.write_table(table.take(list(reversed(range(ROWS)))), path, row_group_size=ROW_GROUP)
    got = {e.key: e for e in iter_entries(index)}
    assert "changed since it was indexed" in got["s00"].error and got["s00"].refs == []


def test_prompt_file_index_holds_paths_and_a_bad_image_is_that_entrys_error(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "a.png").write_bytes(encode_png(rng.integers(0, 255, (16, 16, 3)).astype(np.uint8)))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "p.txt").write_text("k1@@a dog@@dog=a.png@@background=a.png\nk2@@x@@broken.png\nk3@@y@@gone.png\n")
    index = index_entries(str(tmp_path / "p.txt"), str(tmp_path / "v"))
    files = index.column("ref_files").to_pylist()
    assert files[0] == [{"path": str(tmp_path / "a.png"), "label": "dog", "kind": "subject"},
                        {"path": str(tmp_path / "a.png"), "label": "background", "kind": "background"}]
    assert "gone.png" in index.column("error")[2].as_py()  # located when indexing: a missing file is known early
    got = {e.key: e for e in read_entries(str(tmp_path / "p.txt"), str(tmp_path / "v"))}
    assert got["k1"].refs[0].image.shape == (16, 16, 3) and got["k1"].error is None
    assert "broken.png" in got["k2"].error and got["k2"].refs == []

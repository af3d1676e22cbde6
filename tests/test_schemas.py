import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import (
    SchemaError,
    clip_id,
    key_of,
    list_parts,
    read_manifest,
    read_table,
    validate,
    video_id_of,
    write_part,
)
from schemas.io import Location, atomic_write, remove_temporaries, write_bytes


def videos_rows(n=2, **override):
    rows = [{"uri": f"/v/{i}.mp4", "video_id": f"id{i}", "bytes": 10, "duration_s": 1.0, "fps": 24.0,
             "num_frames": 24, "width": 64, "height": 48, "codec": "h264", "pix_fmt": "yuv420p",
             "has_audio": False} for i in range(n)]
    for row in rows:
        row.update(override)
    return rows


def test_wrong_column_type_names_column_and_file(tmp_path):
    bad = pa.Table.from_pylist(videos_rows(height="48"))  # a string where int32 belongs
    path = tmp_path / "videos.parquet"
    pq.write_table(bad, path)
    with pytest.raises(SchemaError) as err:
        read_manifest(str(path), "videos")
    assert err.value.column == "height"
    assert str(path) in str(err.value) and "int32" in str(err.value) and "string" in str(err.value)


def test_missing_extra_and_null_columns_are_named():
    rows = videos_rows()
    table = pa.Table.from_pylist(rows).drop_columns(["codec"])
    with pytest.raises(SchemaError, match="'codec'"):
        validate(table, "videos", source="x.parquet")
    with pytest.raises(SchemaError, match="'surprise'"):
        validate(pa.Table.from_pylist([{**r, "surprise": 1} for r in rows]), "videos")
    with pytest.raises(SchemaError, match="'video_id'.*null"):
        validate(pa.Table.from_pylist(videos_rows(video_id=None)), "videos")


def test_lossless_casts_pass_and_lossy_ones_fail():
    table = pa.Table.from_pylist(videos_rows())  # ints inferred as int64, schema says int32
    assert validate(table, "videos").schema.field("width").type == pa.int32()
    with pytest.raises(SchemaError, match="'width'"):
        validate(pa.Table.from_pylist(videos_rows(width=2**40)), "videos")
    with pytest.raises(SchemaError, match="'num_frames'"):
        validate(pa.Table.from_pylist(videos_rows(num_frames=1.5)), "videos")


def test_ids_are_deterministic_and_content_based():
    a = video_id_of(io.BytesIO(b"same bytes"))
    assert a == video_id_of(io.BytesIO(b"same bytes")) != video_id_of(io.BytesIO(b"other bytes"))
    assert clip_id(a, 0, 48) == clip_id(a, 0, 48) != clip_id(a, 0, 49)
    assert key_of("videos") == "uri" and key_of("clips") == "clip_id"


def test_parts_are_atomic_and_temporaries_invisible(tmp_path):
    folder = Location.of(str(tmp_path / "videos"))
    write_part(pa.Table.from_pylist(videos_rows(2)), folder, "videos", name="a")
    (tmp_path / "videos" / ".part-b-1234.tmp").write_bytes(b"half a parquet file")
    assert [p.rsplit("/", 1)[1] for p in list_parts(folder)] == ["part-a.parquet"]
    assert read_table(folder, "videos").num_rows == 2
    assert pq.read_table(tmp_path / "videos").num_rows == 2  # plain pyarrow skips it too
    assert read_table(folder, "videos", columns=["uri"]).column("uri").to_pylist() == ["/v/0.mp4", "/v/1.mp4"]
    assert remove_temporaries(folder) == 1
    assert write_part(pa.table({}), folder, "videos") is None  # no empty files


def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path):
    final = Location.of(str(tmp_path / "deep" / "run.json"))
    write_bytes(final, b"first")
    with pytest.raises(RuntimeError), atomic_write(final) as tmp:
        with tmp.fs.open_output_stream(tmp.path) as out:
            out.write(b"half")
        raise RuntimeError("killed mid-write")
    assert (tmp_path / "deep" / "run.json").read_bytes() == b"first"
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["run.json"]  # no temporary left
    write_bytes(final, b"second")
    assert (tmp_path / "deep" / "run.json").read_bytes() == b"second"


def test_a_corrupt_part_names_its_file(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "part-x.parquet").write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match="part-x.parquet"):
        read_table(Location.of(str(folder)), "videos")

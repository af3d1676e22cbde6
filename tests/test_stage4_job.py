"""Stage 4 as jobs on a shared Ray, on constructed stage 2-3 tables: pairs, cross-clip pairs, samples.

Stages 2 and 3 write ``objects`` and ``faces``; here those tables (and their ledgers)
are built from their schemas with real images on generated videos, so each assertion
knows its answer.
"""

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute below
import pytest
from pairs_data import clip_row, face_row, object_row, people, sighting, table

from curation.envelope import to_table
from curation.images import decode_png
from curation.synthetic import face_video, write_video
from pipelines.cli import cli
from pipelines.inspect_run import inspect
from pipelines.inspect_run import main as inspect_main
from pipelines.ledger import RunDir, commit
from pipelines.stage4a_variants import main as pairs
from pipelines.stage4b_cross_pairs import main as cross_clip
from pipelines.stage4c_samples import main as assemble
from schemas.io import write_part
from schemas.samples import sample_references
from schemas.tables import INPUT

TINY = ["--models", "tiny", "--set", "variants.size=64", "--set", "variants.steps=2",
        "--set", "background.max_side=64", "--set", "background.steps=2"]
PERSON = people(2, seed=4)


def write_stage(run: RunDir, stage: str, rows: list[dict], inputs: list[str], errors: dict | None = None) -> None:
    """Commit ``rows`` as stage ``stage`` would: its table part, errors and ledger."""
    batch = [{**r, INPUT: r["clip_id"], "status": r.get("status", "kept")} for r in rows]
    for clip in inputs:
        if clip in (errors or {}):
            batch.append({INPUT: clip, "status": "_error", "_error_type": "IncompleteVideoError",
                          "_error_message": errors[clip]})
        elif not any(r[INPUT] == clip for r in batch):
            batch.append({INPUT: clip, "status": "_empty"})
    commit(to_table(batch), run.root.uri(), stage, stage)


def add_clips(run: RunDir, media, names: list[str], start: int = 0):
    """Clips on two generated videos: astronaut (a face and a 'man'), squares (a 'ball')."""
    faces_video = face_video(media / "astronaut.mp4", seconds=4, size=(128, 96)) if not (media / "astronaut.mp4").exists() \
        else media / "astronaut.mp4"
    if not (media / "ball.mp4").exists():
        frame = np.full((96, 128, 3), 90, np.uint8)
        frame[30:54, 70:94] = (230, 20, 20)
        write_video(media / "ball.mp4", [frame] * 48)
    clips, objects, faces = [], [], []
    for n, name in enumerate(names, start):
        kind = name.split("_")[0]
        video = faces_video if kind in ("person", "empty") else media / "ball.mp4"
        clip = clip_row(video=("a" if video == faces_video else "b") * 24, start=12 * n, end=12 * n + 12,
                        uri=str(video), width=128, height=96,
                        caption="a man looks around" if kind == "person" else "a red ball lies on the floor")
        clips.append(clip)
        if kind == "person":
            identity = f"{clip['clip_id']}-i000"
            faces.append(face_row(clip, 0, identity, sighting(PERSON[0], 0.85, seed=n), box=(40, 10, 30, 36),
                                  frame=12 * n + 3))
            objects.append(object_row(clip, 0, "man", (30, 5, 60, 90), 0.7, frame=12 * n + 3))
        elif kind == "ball":
            objects.append(object_row(clip, 0, "ball", (70, 30, 24, 24), 0.8, frame=12 * n + 2))
            objects.append(object_row(clip, 1, "ball", (0, 0, 3, 3), 0.5, frame=12 * n + 2, status="too_small"))
    return clips, objects, faces


@pytest.fixture()
def run_dir(tmp_path):
    run = RunDir.of(str(tmp_path / "run"))
    clips, objects, faces = add_clips(run, tmp_path / "media", ["person_a", "ball_a", "person_b", "empty_a"])
    filtered = clip_row(video="c" * 24, start=0, end=10, status="motion", caption=None)
    broken = clip_row(video="d" * 24, start=0, end=10, uri=str(tmp_path / "media" / "ball.mp4"))
    write_part(table("clips", clips + [filtered, broken]), run.table("clips"), "clips", name="c")
    ids = [c["clip_id"] for c in clips] + [broken["clip_id"]]
    write_stage(run, "objects", objects, ids)
    write_stage(run, "faces", faces, ids, errors={broken["clip_id"]: "broken.mp4: frames did not decode"})
    return run, clips, broken, tmp_path


def test_stage4_jobs_make_variants_backgrounds_pairs_and_samples(ray_session, run_dir, capsys):
    run, clips, broken, tmp_path = run_dir
    root = run.root.path
    assert cli(pairs, ["--run-dir", root, *TINY]) == 0
    out = capsys.readouterr().out
    assert "== stage pairs: 5 inputs" in out and "every input accounted for" in out

    rows = run.read("pairs").to_pylist()
    person, ball, person_b, empty = (c["clip_id"] for c in clips)
    kinds = {(r["clip_id"], r["kind"]) for r in rows}
    assert kinds == {(person, "face"), (person, "object"), (person, "background"), (ball, "object"),
                     (ball, "background"), (person_b, "face"), (person_b, "object"), (person_b, "background")}
    for row in rows:
        assert row["status"] == "kept" and decode_png(row["image"]).ndim == 3
        assert row["seed"] is not None and row["model"] == "tiny"
    ball_bg = next(r for r in rows if r["clip_id"] == ball and r["kind"] == "background")
    assert ball_bg["frame"] == 12 + 2  # the keyframe is where the ball was seen
    errors = run.read("errors").to_pylist()
    mine = [e for e in errors if e["stage"] == "pairs"]
    assert [e["input"] for e in mine] == [broken["clip_id"]] and "stage faces failed" in mine[0]["message"]

    assert cli(cross_clip, ["--run-dir", root]) == 0
    cross = run.read("cross_pairs").to_pylist()
    assert [(r["clip_a"], r["clip_b"], r["status"]) for r in cross] == [(person, person_b, "kept")]

    assert cli(assemble, ["--run-dir", root]) == 0
    samples = {r["clip_id"]: r for r in run.read("samples").to_pylist()}
    assert set(samples) == {person, ball, person_b}  # the empty clip has no reference: no sample
    for sample in samples.values():
        refs = sample_references(sample, use_variants=False)
        variants = sample_references(sample, use_variants=True)
        assert refs[-1].kind == "background" and sample["background"]
        assert all(item["variant"] for kind in ("faces", "objects") for item in sample[kind])
        assert len(variants) == len(refs) <= 8
    face = samples[person]["faces"][0]
    assert face["label"] == "man" and face["variant_source"] == "cross_clip"
    assert face["variant"] == next(f for f in run.read("faces").to_pylist() if f["clip_id"] == person_b)["crop"]
    assert samples[ball]["objects"][0]["variant_source"] == "generated" and samples[ball]["subject_words"] == ["ball"]
    assert json.loads(samples[ball]["provenance"])["background"]["frame"] == 14

    books = inspect(run)
    assert books["ok"], books["problems"]
    assert books["stages"]["samples"]["by_status"] == {"kept": 3} and books["stages"]["samples"]["errors"] == 1
    assert books["stages"]["cross_clip"]["inputs"] == 2

    # Reruns do nothing: every input is in its stage's ledger.
    before = {kind: sorted(p.name for p in (tmp_path / "run" / kind).glob("*.parquet"))
              for kind in ("pairs", "cross_pairs", "samples")}
    capsys.readouterr()
    for job in (pairs, cross_clip, assemble):
        assert cli(job, ["--run-dir", root, *(TINY if job is pairs else [])]) == 0
    rerun = capsys.readouterr().out
    assert rerun.count(" 0 processed in ") == 3, rerun
    after = {kind: sorted(p.name for p in (tmp_path / "run" / kind).glob("*.parquet")) for kind in before}
    assert after == before

    # One more clip of the same person arrives: only its pairs are added, old rows stay.
    new_clips, new_objects, new_faces = add_clips(run, tmp_path / "media", ["person_c"], start=6)
    write_part(table("clips", new_clips), run.table("clips"), "clips", name="c2")
    write_stage(run, "objects", new_objects, [new_clips[0]["clip_id"]])
    write_stage(run, "faces", new_faces, [new_clips[0]["clip_id"]])
    for job in (pairs, cross_clip, assemble):
        assert cli(job, ["--run-dir", root, *(TINY if job is pairs else [])]) == 0
    cross_after = run.read("cross_pairs").to_pylist()
    added = [r for r in cross_after if r not in cross]
    new_clip = new_clips[0]["clip_id"]
    assert len(cross_after) == 3 and all(new_clip in (r["clip_a"], r["clip_b"]) for r in added)
    assert {r["clip_id"] for r in run.read("samples").to_pylist()} == {person, ball, person_b, new_clip}
    assert inspect(run)["ok"]

    # A lost output row: the books name the clip whose sample is gone, and exit 1.
    import pyarrow.parquet as pq

    part = next(p for p in sorted((tmp_path / "run" / "samples").glob("*.parquet"))
                if ball in pq.read_table(p, columns=["clip_id"]).column("clip_id").to_pylist())
    rows_left = pq.read_table(part)
    pq.write_table(rows_left.filter(pa.compute.not_equal(rows_left.column("clip_id"), ball)), part)
    capsys.readouterr()
    assert cli(inspect_main, [root]) == 1
    out = capsys.readouterr().out
    assert f"first broken input: {ball} (ledger: 1 rows" in out and "PROBLEM: samples" in out


def test_stage4_waits_for_stages_2_and_3(ray_session, tmp_path, capsys):
    run = RunDir.of(str(tmp_path / "run"))
    clips, objects, faces = add_clips(run, tmp_path / "media", ["ball_a"])
    write_part(table("clips", clips), run.table("clips"), "clips", name="c")
    write_stage(run, "objects", objects, [clips[0]["clip_id"]])  # faces has not run yet
    assert cli(pairs, ["--run-dir", str(tmp_path / "run"), *TINY]) == 0
    out = capsys.readouterr().out
    assert 'waiting for earlier stages: {"faces": 1}' in out
    assert not run.has("pairs") and not run.read_ledger("pairs").num_rows
    assert cli(pairs, ["--run-dir", str(tmp_path / "run"), *TINY, "--set", "after=[objects]"]) == 0
    assert {r["kind"] for r in run.read("pairs").to_pylist()} == {"object", "background"}


def test_stage4_refuses_a_missing_clips_table_in_one_line(tmp_path, capsys):
    assert cli(pairs, ["--run-dir", str(tmp_path / "nothing"), "--models", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no clips table" in err and "stage1_clips.py" in err


def test_samples_readers_agree_on_a_real_run(ray_session, run_dir, capsys):
    """pandas, DuckDB and datasets read the assembled table unchanged; PNGs open in Pillow."""
    import duckdb
    import pandas as pd
    from datasets import load_dataset

    run, clips, _, tmp_path = run_dir
    root = run.root.path
    for job in (pairs, cross_clip, assemble):
        assert cli(job, ["--run-dir", root, *(TINY if job is pairs else [])]) == 0
    expected = sorted(run.read("samples").to_pylist(), key=lambda r: r["sample_id"])
    frame = pd.read_parquet(tmp_path / "run" / "samples").sort_values("sample_id")
    assert list(frame["sample_id"]) == [r["sample_id"] for r in expected]
    got = duckdb.sql(f"select sample_id, background from read_parquet('{tmp_path}/run/samples/*.parquet') "
                     "order by sample_id").fetchall()
    assert [(g[0], bytes(g[1])) for g in got] == [(r["sample_id"], r["background"]) for r in expected]
    dataset = load_dataset("parquet", data_files=str(tmp_path / "run" / "samples" / "*.parquet"),
                           cache_dir=str(tmp_path / "hf"))["train"].sort("sample_id")
    assert [r["faces"] for r in dataset] == [r["faces"] for r in expected]
    assert isinstance(pa.table({"x": [1]}), pa.Table)

"""Export a run's samples for others: a Hugging Face dataset, or OpenS2V-5M's JSON layout.

    python -m pipelines.export --run-dir RUN --format hf [--out DIR]
    python -m pipelines.export --run-dir RUN --format opens2v [--out DIR] [--videos-root DIR]

``hf``: ``DIR/data/train-NNNNN.parquet`` (one per samples part, images as ``Image``
features, ``schemas/hf.py``) and a ``README.md`` dataset card;
``datasets.load_dataset("parquet", data_files="DIR/data/*.parquet")`` loads it.
``opens2v``: ``DIR/samples.json`` ({key: {metadata, word_tags, annotation}}), ``DIR/backgrounds``,
``DIR/views`` and the cross pairs as their pair lists in ``DIR/pairs`` (``cross_frames_pairs.json``,
``cluster_videos.json``) (``curation/opens2v/export.py``); video paths are relative to
``--videos-root`` (default: the videos' common folder), which their loader and
``pipelines/import_opens2v.py --videos`` take (and ``--pairs DIR/pairs``). Parts are read one at a time; the OpenS2V JSON
is one object per file, as theirs is, so it is written key by key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

import pyarrow.parquet as pq

from curation.opens2v.export import pair_lists, sample_entry
from pipelines.cli import Parser, UserError, cli
from pipelines.ledger import RunDir
from schemas.hf import dataset_card, to_hf
from schemas.io import list_parts
from schemas.validate import validate

OBJECT_COLUMNS = ["object_id", "label", "frame", "box", "mask", "score"]
PAIR_COLUMNS = ["pair_id", "identity_a", "identity_b", "similarity", "status"]
PAIRS_FOLDER = "samples_cluster"  # the part folder their pair lists put before a key


def export_hf(run: RunDir, out: str) -> int:
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    parts = list_parts(run.table("samples"))
    rows = 0
    for n, part in enumerate(parts):
        table = _one_part(run, part)
        rows += table.num_rows
        pq.write_table(to_hf(table), os.path.join(out, "data", f"train-{n:05d}-of-{len(parts):05d}.parquet"),
                       compression="zstd")
    card = dataset_card(os.path.basename(os.path.abspath(run.root.path)), rows, "data/*.parquet",
                        "MAGREF training records (Eq. 19): a video clip, its caption, face and object references "
                        "with their variants, and a background, curated by magref.")
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as stream:
        stream.write(card)
    return rows


def _one_part(run: RunDir, part: str):
    """One samples part, validated (an error names the file)."""
    return validate(pq.read_table(part, filesystem=run.root.fs), "samples", source=part)


def export_opens2v(run: RunDir, out: str, videos_root: str | None) -> tuple[int, Counter]:
    os.makedirs(out, exist_ok=True)
    parts = list_parts(run.table("samples"))
    if videos_root is None:
        uris = [u for p in parts for u in pq.read_table(p, columns=["uri"], filesystem=run.root.fs)
                .column("uri").to_pylist()]
        videos_root = os.path.commonpath([os.path.dirname(u) for u in uris]) if uris else "/"
    left_out: Counter = Counter()
    masks = {}  # object id -> where it was exported: ids only, for the pair lists
    keys = 0
    path = os.path.join(out, "samples.json")
    with open(path + ".tmp", "w", encoding="utf-8") as stream:
        stream.write("{")
        for part in parts:
            samples = _one_part(run, part).to_pylist()
            ids = sorted({o["source_id"] for s in samples for o in s.get("objects") or [] if o.get("source_id")})
            objects = {r["object_id"]: r for r in run.read("objects", OBJECT_COLUMNS, [("object_id", "in", ids)])
                       .to_pylist()} if ids and run.has("objects") else {}
            clip_ids = sorted({s["clip_id"] for s in samples})
            clips = {r["clip_id"]: r for r in run.read("clips", ["clip_id", "width", "height", "aesthetic", "motion"],
                                                        [("clip_id", "in", clip_ids)]).to_pylist()} \
                if run.has("clips") else {}
            for sample in samples:
                entry, files, dropped, placed = sample_entry(sample, objects, clips.get(sample["clip_id"]),
                                                             videos_root)
                left_out.update(dropped)
                masks.update(placed)
                for name, data in files.items():
                    os.makedirs(os.path.dirname(os.path.join(out, name)), exist_ok=True)
                    with open(os.path.join(out, name), "wb") as image:
                        image.write(data)
                stream.write(("," if keys else "") + "\n" + json.dumps(sample["sample_id"]) + ": " + json.dumps(entry))
                keys += 1
        stream.write("\n}\n")
    os.replace(path + ".tmp", path)
    with open(os.path.join(out, "videos_root.txt"), "w", encoding="utf-8") as stream:
        stream.write(videos_root + "\n")
    left_out.update(export_pair_lists(run, os.path.join(out, "pairs"), masks))
    return keys, left_out


def export_pair_lists(run: RunDir, out: str, masks: dict) -> Counter:
    """The kept ``cross_pairs`` as their ``cross_frames_pairs.json`` and ``cluster_videos.json``."""
    rows = run.read("cross_pairs", PAIR_COLUMNS, [("status", "==", "kept")]).to_pylist() \
        if run.has("cross_pairs") else []
    clusters, pairs, left_out = pair_lists(rows, masks, PAIRS_FOLDER)
    os.makedirs(out, exist_ok=True)
    for name, data in (("cluster_videos.json", clusters), ("cross_frames_pairs.json", pairs)):
        with open(os.path.join(out, name + ".tmp"), "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=1)
        os.replace(os.path.join(out, name + ".tmp"), os.path.join(out, name))
    return left_out


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="the run whose samples table to export")
    parser.add_argument("--format", required=True, choices=("hf", "opens2v"))
    parser.add_argument("--out", help="output folder (default: RUN/export/<format>)")
    parser.add_argument("--videos-root", help="opens2v: video paths are written relative to this folder")
    args = parser.parse_args(argv)
    run = RunDir.of(args.run_dir)
    if not run.has("samples"):
        raise UserError(f"{args.run_dir} has no samples table: run pipelines/stage4c_samples.py "
                        f"--run-dir {args.run_dir} (or pipelines/import_opens2v.py) first")
    out = args.out or os.path.join(run.root.path, "export", args.format)
    if args.format == "hf":
        rows = export_hf(run, out)
        print(f"[export] {rows} samples -> {out} (Hugging Face parquet + README.md)", flush=True)
    else:
        keys, left_out = export_opens2v(run, out, args.videos_root)
        note = f"; left out: {dict(left_out)}" if sum(left_out.values()) else ""
        print(f"[export] {keys} keys -> {out} (OpenS2V-5M layout{note})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))

"""A synthetic run of many clips, tables only (no media): what stages 1-4b would commit.

Used by ``tests/test_scale.py`` and ``benchmarks/scale.py``. Per clip: one person (one
identity, ``faces_per_clip`` faces, the first selected) with a 512-d embedding and a crop,
one object with mask and ref, a generated variant for the face and the object and a
background in ``pairs``; clip 2k's identity is paired with clip 2k+1's in ``cross_pairs``.
Images are PNGs of ``png_side`` px (noise, so they do not compress away). Parts hold
``clips_per_part`` clips, as a stage's block commits them, each with its ledger part.
"""

from __future__ import annotations

import functools

import numpy as np

from curation.envelope import to_table
from curation.images import encode_png
from pipelines.ledger import RunDir, commit
from schemas.ids import background_id, clip_id, cross_pair_id, face_id, object_id, variant_id
from schemas.io import write_part
from schemas.tables import INPUT, schema_for


@functools.lru_cache(maxsize=4096)
def _png(side: int, seed: int, channels: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, channels), dtype=np.uint8)
    return encode_png(pixels[..., 0] if channels == 1 else pixels)


def png(side: int, seed: int, channels: int = 3) -> bytes:
    """A noise PNG; seeds repeat every 251 (encoding is the slow part of building a big run)."""
    return _png(side, seed % 251, channels)


def clip_rows(count: int) -> list[dict]:
    rows = []
    for n in range(count):
        video = f"{n // 8:024x}"
        start = (n % 8) * 48
        rows.append({"clip_id": clip_id(video, start, start + 48), "video_id": video, "uri": f"/videos/{video}.mp4",
                     "start_frame": start, "end_frame": start + 48, "start_s": start / 24, "end_s": (start + 48) / 24,
                     "fps": 24.0, "width": 128, "height": 96, "motion": 2.0, "aesthetic": 5.0, "status": "kept",
                     "caption": "a man throws a red ball", "subjects": ["man", "ball"], "crop": None})
    return rows


def identity(clip: dict) -> str:
    return f"{clip['clip_id']}-i000"


@functools.lru_cache(maxsize=256)
def _embedding(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=512).astype(np.float32)


def face_rows(clip: dict, n: int, png_side: int, faces_per_clip: int) -> list[dict]:
    embedding = _embedding(n % 251)
    crop = png(png_side, n)
    return [{"face_id": face_id(clip["clip_id"], k), "clip_id": clip["clip_id"], "identity_id": identity(clip),
             "segment": "clip", "frame": k, "time_s": k / 24, "box": [40.0, 10.0, 24.0, 28.0],
             "keypoints": [50.0] * 10, "det_score": 0.9 - 0.01 * k, "yaw": 0.0, "pitch": 0.0, "roll": 0.0,
             "blur": 100.0, "score": 0.9 - 0.01 * k, "embedding": embedding, "embedding_model": "test:synthetic",
             "crop": crop, "crop_box": [40.0, 10.0, 24.0, 28.0], "rank": k, "selected": k == 0, "status": "kept"}
            for k in range(faces_per_clip)]


def object_rows(clip: dict, n: int, png_side: int) -> list[dict]:
    return [{"object_id": object_id(clip["clip_id"], 0), "clip_id": clip["clip_id"], "label": "ball", "frame": 2,
             "box": [70.0, 30.0, 24.0, 24.0], "score": 0.8, "mask": png(png_side, n + 1, 1),
             "ref": png(png_side, n + 2, 4), "area": 576, "solidity": 0.95, "face_iou": 0.0, "status": "kept"}]


def pair_rows(clip: dict, n: int, png_side: int) -> list[dict]:
    sources = [("face", face_id(clip["clip_id"], 0)), ("object", object_id(clip["clip_id"], 0))]
    rows = [{"pair_id": variant_id(source), "clip_id": clip["clip_id"], "kind": kind, "source_id": source,
             "image": png(png_side, n + 3 + k), "variant_source": "generated", "model": "tiny", "prompt": "p",
             "seed": 3, "status": "kept"} for k, (kind, source) in enumerate(sources)]
    rows.append({"pair_id": background_id(clip["clip_id"]), "clip_id": clip["clip_id"], "kind": "background",
                 "source_id": clip["clip_id"], "image": png(png_side, n + 5), "model": "opencv", "seed": 9,
                 "frame": 0, "status": "kept"})
    return rows


def _commit(run: RunDir, stage: str, table: str, rows: list[dict], inputs: list[str], key: str = "clip_id") -> None:
    names = schema_for(table).names
    batch = [{**{k: r.get(k) for k in names}, INPUT: r[key]} for r in rows]
    batch += [{INPUT: i, "status": "_empty"} for i in inputs if not any(r[key] == i for r in rows)]
    commit(to_table(batch, schema_for(table)), run.root.uri(), stage, table)


def build_run(root: str, clips: int, clips_per_part: int = 4, png_side: int = 16, faces_per_clip: int = 2,
              ) -> tuple[RunDir, list[dict]]:
    """Write the run; returns it and its clip rows."""
    run = RunDir.of(root)
    rows = clip_rows(clips)
    for start in range(0, clips, 1000):
        write_part(to_table(rows[start:start + 1000], schema_for("clips")).select(schema_for("clips").names),
                   run.table("clips"), "clips", name=f"clips-{start:08d}")
    for start in range(0, clips, clips_per_part):
        block = rows[start:start + clips_per_part]
        ids = [c["clip_id"] for c in block]
        numbered = list(enumerate(block, start))
        _commit(run, "faces", "faces", [f for n, c in numbered for f in face_rows(c, n, png_side, faces_per_clip)], ids)
        _commit(run, "objects", "objects", [o for n, c in numbered for o in object_rows(c, n, png_side)], ids)
        _commit(run, "pairs", "pairs", [p for n, c in numbered for p in pair_rows(c, n, png_side)], ids)
    cross = []
    for a, b in zip(rows[0::2], rows[1::2]):
        cross.append({"pair_id": cross_pair_id(identity(a), identity(b)), "identity_a": identity(a),
                      "clip_a": a["clip_id"], "identity_b": identity(b), "clip_b": b["clip_id"],
                      "similarity": 0.8, "status": "kept"})
    for start in range(0, len(cross), 5000):
        chunk = cross[start:start + 5000]
        _commit(run, "cross_clip", "cross_pairs", chunk, [r["identity_a"] for r in chunk], key="identity_a")
        identities = [r["identity_b"] for r in chunk]
        _commit(run, "cross_clip", "cross_pairs", [], identities, key="identity_b")
    return run, rows

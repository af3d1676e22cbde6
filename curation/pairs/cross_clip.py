"""Cross-clip identity pairs: the same person in another clip is a variant nobody had to generate.

Beyond the paper (B.4 generates every variant): a face reference of clip A and a face of
the same person in clip B differ in pose, light, clothes and camera the way real footage
does, which is exactly what a variant I' is for. Identities are numbered per clip by
stage 3; here each identity becomes one **centroid** (the mean of its selected faces'
unit embeddings, renormalised), and two identities of different clips pair when their
cosine lies in a band:

* ``>= min_similarity``: high enough to be the same person (ArcFace-style embeddings);
* ``<  max_similarity``: below near-duplicate. Two clips cut from the same footage (or
  a re-upload) give centroids that are almost equal; that pair teaches nothing new and
  is recorded with status ``near_duplicate`` instead of ``kept``.

**Deterministic and resumable.** The pairs are *every* pair in the band, not a top-k,
so the result does not depend on the order identities arrive in. A run queries only the
identities it has not seen before (``new_ids``) against all identities, old and new, and
each pair is written once, owned by its newer side (by the larger id when both are new).
A rerun after new clips arrive therefore adds exactly the pairs that involve a new clip
and never rewrites an old one. Similarities are recomputed with numpy for every pair an
index returns, so the numpy and faiss paths give the same numbers.

**The index.** Below ``numpy_below`` identities a brute-force numpy product is fastest;
above, faiss (``IndexFlatIP`` range search: exact, BLAS, chunked), or with
``index="faiss-hnsw"`` an HNSW graph for corpora too large for exact search
(approximate: it may miss a pair an exact search finds). Embeddings from different
models are never compared (stage 3 names the model in ``embedding_model`` when the table
has that column).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.operator import setting
from schemas.ids import cross_pair_id, video_of
from schemas.tables import KEPT

NEAR_DUPLICATE = "near_duplicate"
_QUERY_CHUNK = 4096


@dataclass
class CrossClipConfig:
    min_similarity: float = setting(0.5, help="centroid cosine at which two identities are the same person")
    max_similarity: float = setting(0.92, help="at or above: near-duplicate footage, recorded but not a variant")
    index: str = setting("auto", help='"auto", "numpy", "faiss" (exact) or "faiss-hnsw" (approximate, huge corpora)')
    numpy_below: int = setting(20000, help='"auto": brute-force numpy below this many identities, faiss above')
    same_video: bool = setting(True, help="False: pair only clips of different videos")
    hnsw_m: int = setting(32, help="faiss-hnsw: graph degree")

    def __post_init__(self) -> None:
        if not -1 <= self.min_similarity < self.max_similarity <= 1.0001:
            raise ValueError(f"cross_clip: need -1 <= min_similarity < max_similarity <= 1, got "
                             f"{self.min_similarity}, {self.max_similarity}")
        if self.index not in ("auto", "numpy", "faiss", "faiss-hnsw"):
            raise ValueError(f"cross_clip.index must be auto, numpy, faiss or faiss-hnsw, got {self.index!r}")


@dataclass
class Centroids:
    """One unit vector per identity, sorted by identity id (the order every index is built in)."""

    ids: list[str]
    clips: list[str]
    spaces: list[str]  # the embedding model of each identity ("" when the table does not say)
    vectors: np.ndarray  # (n, d) float32, unit rows

    def __len__(self) -> int:
        return len(self.ids)


SUMS = pa.schema([pa.field("identity_id", pa.string()), pa.field("clip_id", pa.string()),
                  pa.field("space", pa.string()), pa.field("sum", pa.list_(pa.float64())),
                  pa.field("count", pa.int64())])


def identity_sums(faces: pa.Table) -> pa.Table:
    """Per identity with a selected face: its clip, embedding space, the sum of its unit
    embeddings and how many. Sums from several parts of the faces table add up
    (``centroids_from_sums``), so they can be computed where the parts are read."""
    keep = pc.and_(pc.fill_null(faces.column("selected"), False), pc.invert(pc.is_null(faces.column("identity_id"))))
    faces = faces.filter(keep)
    space = faces.column("embedding_model").to_pylist() if "embedding_model" in faces.column_names else None
    groups: dict[str, dict[str, Any]] = {}
    for i, (identity, clip, embedding) in enumerate(zip(faces.column("identity_id").to_pylist(),
                                                        faces.column("clip_id").to_pylist(),
                                                        faces.column("embedding").to_pylist())):
        if embedding is None:
            continue
        vector = np.asarray(embedding, np.float64)
        norm = np.linalg.norm(vector)
        if not np.isfinite(norm) or norm == 0:
            continue
        group = groups.setdefault(identity, {"identity_id": identity, "clip_id": clip,
                                             "space": (space[i] if space else None) or "", "sum": 0.0, "count": 0})
        group["sum"] = group["sum"] + vector / norm
        group["count"] += 1
    rows = [{**g, "sum": np.asarray(g["sum"], np.float64).tolist()} for g in groups.values()]
    return pa.Table.from_pylist(rows, schema=SUMS)


def centroids_from_sums(parts: Iterable[pa.Table]) -> Centroids:
    """Add up per-part sums by identity and normalise: one unit centroid per identity, sorted by id."""
    groups: dict[str, dict[str, Any]] = {}
    for part in parts:
        for row in part.to_pylist():
            group = groups.setdefault(row["identity_id"], {"clip": row["clip_id"], "space": row["space"], "sum": 0.0})
            group["sum"] = group["sum"] + np.asarray(row["sum"], np.float64)
    ids = sorted(groups)
    vectors = [groups[i]["sum"] / np.linalg.norm(groups[i]["sum"]) for i in ids]
    dim = len(vectors[0]) if vectors else 0
    return Centroids(ids, [groups[i]["clip"] for i in ids], [groups[i]["space"] for i in ids],
                     np.asarray(vectors, np.float32).reshape(len(ids), dim))


def candidates(vectors: np.ndarray, queries: np.ndarray, threshold: float, config: CrossClipConfig) -> Iterable[tuple[int, int]]:
    """(query row, vector row) pairs whose inner product may reach ``threshold``, from the chosen index."""
    kind = config.index
    if kind == "auto":
        kind = "numpy" if len(vectors) < config.numpy_below else "faiss"
    if kind == "numpy":
        for start in range(0, len(queries), _QUERY_CHUNK):
            sims = queries[start:start + _QUERY_CHUNK] @ vectors.T
            rows, cols = np.nonzero(sims >= threshold - 1e-4)
            yield from zip((rows + start).tolist(), cols.tolist())
        return
    import faiss

    if kind == "faiss":
        index = faiss.IndexFlatIP(vectors.shape[1])
    else:
        index = faiss.IndexHNSWFlat(vectors.shape[1], config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.add(np.ascontiguousarray(vectors))
    for start in range(0, len(queries), _QUERY_CHUNK):
        limits, _, found = index.range_search(np.ascontiguousarray(queries[start:start + _QUERY_CHUNK]), threshold - 1e-4)
        for q in range(len(limits) - 1):
            for j in found[limits[q]:limits[q + 1]]:
                yield start + q, int(j)


def pair_new_identities(centroids: Centroids, new_ids: Iterable[str], config: CrossClipConfig) -> list[dict]:
    """Every in-band pair that involves a new identity, once, as ``cross_pairs`` rows.

    Each row carries ``_input`` = the identity that owns it (its newer side), so the
    stage ledger can commit identities whose pairs are all written.
    """
    new = set(new_ids)
    rows: dict[str, dict] = {}
    for space in sorted(set(centroids.spaces)):
        members = [i for i, s in enumerate(centroids.spaces) if s == space]
        queries = [i for i in members if centroids.ids[i] in new]
        if not queries:
            continue
        vectors = centroids.vectors[members]
        for q, j in candidates(vectors, centroids.vectors[queries], config.min_similarity, config):
            a, b = queries[q], members[j]
            id_a, id_b = centroids.ids[a], centroids.ids[b]
            clip_a, clip_b = centroids.clips[a], centroids.clips[b]
            if clip_a == clip_b or (not config.same_video and video_of(clip_a) == video_of(clip_b)):
                continue
            similarity = float(np.dot(centroids.vectors[a].astype(np.float64), centroids.vectors[b].astype(np.float64)))
            if similarity < config.min_similarity:
                continue
            owner = id_a if id_b not in new else max(id_a, id_b)
            first, second = sorted(((id_a, clip_a), (id_b, clip_b)))
            key = cross_pair_id(id_a, id_b)
            rows[key] = {"pair_id": key, "identity_a": first[0], "clip_a": first[1], "identity_b": second[0],
                         "clip_b": second[1], "similarity": round(similarity, 6),
                         "status": NEAR_DUPLICATE if similarity >= config.max_similarity else KEPT,
                         "_input": owner}
    return [rows[key] for key in sorted(rows)]


def best_partners(pairs: Iterable[dict]) -> dict[str, tuple[str, str, float]]:
    """For each identity, its kept partner with the highest similarity: {identity: (partner, clip, sim)}.

    ``pairs`` are ``cross_pairs`` rows. Ties go to the smaller partner id, so the choice
    is a function of the pairs alone.
    """
    best: dict[str, tuple[str, str, float]] = {}
    for row in pairs:
        if row["status"] != KEPT:
            continue
        for me, other, clip in ((row["identity_a"], row["identity_b"], row["clip_b"]),
                                (row["identity_b"], row["identity_a"], row["clip_a"])):
            candidate = (other, clip, float(row["similarity"]))
            current = best.get(me)
            if current is None or (-candidate[2], candidate[0]) < (-current[2], current[0]):
                best[me] = candidate
    return best

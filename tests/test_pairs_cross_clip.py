"""Cross-clip identity pairs on constructed embeddings: exactly the expected clips pair, reruns add only new pairs."""

import itertools

import numpy as np
import pyarrow as pa
import pytest
from pairs_data import clip_row, face_row, people, sighting, table

from curation.pairs.cross_clip import (
    NEAR_DUPLICATE,
    CrossClipConfig,
    best_partners,
    centroids_from_sums,
    identity_sums,
    pair_new_identities,
)
from schemas.ids import cross_pair_id

PERSONS = people(3, seed=1)


def corpus(extra_clip: bool = False):
    """Clips and who is in them; one identity per (clip, person), one selected face each."""
    cast = {"c0": [0], "c1": [0], "c2": [1], "c3": [0, 1], "c4": [2], "c5": [0]}
    if extra_clip:
        cast["c6"] = [1, 2]
    clips = {name: clip_row(video=f"{name}{'x' * 22}", start=0, end=48) for name in cast}
    clips["c5"] = clip_row(video="c0" + "x" * 22, start=48, end=96)  # another clip of c0's video
    faces, identity_of = [], {}
    vectors: dict[str, np.ndarray] = {}
    for n, (name, persons) in enumerate(sorted(cast.items())):
        clip = clips[name]
        for k, person in enumerate(persons):
            identity = f"{clip['clip_id']}-i{k:03d}"
            identity_of[(name, person)] = identity
            if name == "c5":  # the same footage as c0: a near-duplicate centroid
                vector = vectors[identity_of[("c0", 0)]] + 0.01 * sighting(PERSONS[0], 0.0, seed=99)
            else:
                vector = sighting(PERSONS[person], 0.85, seed=10 * n + k)
            vectors[identity] = vector / np.linalg.norm(vector)
            faces.append(face_row(clip, 2 * k, identity, vectors[identity], rank=0))
            # A face that was not selected must not move the centroid.
            faces.append(face_row(clip, 2 * k + 1, identity, people(1, seed=500 + n)[0], selected=False, rank=5))
    return table("faces", faces), identity_of, vectors


def expected_pairs(identity_of):
    kept, near = set(), set()
    for (clip_a, p_a), (clip_b, p_b) in itertools.combinations(sorted(identity_of), 2):
        if p_a != p_b or clip_a == clip_b:
            continue
        key = cross_pair_id(identity_of[(clip_a, p_a)], identity_of[(clip_b, p_b)])
        (near if {clip_a, clip_b} == {"c0", "c5"} else kept).add(key)
    return kept, near


def by_status(rows):
    return ({r["pair_id"] for r in rows if r["status"] == "kept"},
            {r["pair_id"] for r in rows if r["status"] == NEAR_DUPLICATE})


def test_the_constructed_similarities_sit_where_the_test_needs_them():
    faces, identity_of, vectors = corpus(extra_clip=True)
    for (a, pa_), (b, pb) in itertools.combinations(identity_of, 2):
        sim = float(vectors[identity_of[(a, pa_)]] @ vectors[identity_of[(b, pb)]])
        if {a, b} == {"c0", "c5"} and pa_ == pb == 0:
            assert sim > 0.99
        elif pa_ == pb:
            assert 0.6 < sim < 0.85, (a, b, sim)
        else:
            assert abs(sim) < 0.25, (a, b, sim)


@pytest.mark.parametrize("index", ["numpy", "faiss", "faiss-hnsw"])
def test_pairing_finds_exactly_the_same_person_in_other_clips(index):
    faces, identity_of, _ = corpus()
    centroids = centroids_from_sums([identity_sums(faces)])
    assert len(centroids) == len(identity_of)  # non-selected faces make no identity of their own
    rows = pair_new_identities(centroids, centroids.ids, CrossClipConfig(index=index))
    kept, near = expected_pairs(identity_of)
    assert by_status(rows) == (kept, near)
    assert len({r["pair_id"] for r in rows}) == len(rows)  # each pair once
    for row in rows:
        assert row["identity_a"] < row["identity_b"] and row["clip_a"] != row["clip_b"]
        assert row["_input"] == row["identity_b"]  # both sides new: the larger id owns the pair, once


def test_every_index_gives_the_same_rows_and_numbers():
    faces, _, _ = corpus(extra_clip=True)
    centroids = centroids_from_sums([identity_sums(faces)])
    results = [pair_new_identities(centroids, centroids.ids, CrossClipConfig(index=i))
               for i in ("numpy", "faiss", "faiss-hnsw")]
    assert results[0] == results[1] == results[2]


def test_rerun_with_one_more_clip_adds_only_that_clips_pairs():
    faces, identity_of, _ = corpus()
    first = pair_new_identities(centroids_from_sums([identity_sums(faces)]), centroids_from_sums([identity_sums(faces)]).ids, CrossClipConfig())
    more_faces, more_identities, _ = corpus(extra_clip=True)
    centroids = centroids_from_sums([identity_sums(more_faces)])
    new_ids = {identity_of_new for key, identity_of_new in more_identities.items() if key[0] == "c6"}
    added = pair_new_identities(centroids, new_ids, CrossClipConfig())
    # Exactly the pairs between c6's people and the same people elsewhere.
    expected = {cross_pair_id(more_identities[("c6", 1)], more_identities[(c, 1)]) for c in ("c2", "c3")}
    expected.add(cross_pair_id(more_identities[("c6", 2)], more_identities[("c4", 2)]))
    assert {r["pair_id"] for r in added} == expected
    assert all(r["_input"] in new_ids for r in added)
    # Old + added = a run from scratch over everything (order does not matter).
    scratch = pair_new_identities(centroids, centroids.ids, CrossClipConfig())
    assert sorted(first + added, key=lambda r: r["pair_id"]) == [
        {**r, "_input": r["_input"]} for r in scratch
        if r["pair_id"] in {x["pair_id"] for x in first + added}]
    assert {r["pair_id"] for r in first + added} == {r["pair_id"] for r in scratch}


def test_row_order_does_not_change_the_pairs():
    faces, _, _ = corpus(extra_clip=True)
    shuffled = faces.take(pa.array(np.random.default_rng(3).permutation(faces.num_rows)))
    a = pair_new_identities(centroids_from_sums([identity_sums(faces)]), centroids_from_sums([identity_sums(faces)]).ids, CrossClipConfig())
    b = pair_new_identities(centroids_from_sums([identity_sums(shuffled)]), centroids_from_sums([identity_sums(shuffled)]).ids, CrossClipConfig())
    assert [(r["pair_id"], r["status"]) for r in a] == [(r["pair_id"], r["status"]) for r in b]
    assert np.allclose([r["similarity"] for r in a], [r["similarity"] for r in b], atol=1e-6)


def test_same_video_false_skips_clips_of_one_video():
    faces, identity_of, _ = corpus()
    centroids = centroids_from_sums([identity_sums(faces)])
    rows = pair_new_identities(centroids, centroids.ids, CrossClipConfig(same_video=False))
    c0, c5 = identity_of[("c0", 0)], identity_of[("c5", 0)]
    assert cross_pair_id(c0, c5) not in {r["pair_id"] for r in rows}
    assert cross_pair_id(identity_of[("c1", 0)], c5) in {r["pair_id"] for r in rows}


def test_embeddings_of_different_models_never_pair():
    faces, identity_of, _ = corpus()
    spaces = ["dlib" if clip.endswith(("c1" + "x" * 22 + "-0000000-0000048",)) else "insightface"
              for clip in faces.column("clip_id").to_pylist()]
    if "embedding_model" in faces.column_names:  # faces schema v2 names the model
        faces = faces.drop_columns(["embedding_model"])
    faces = faces.append_column("embedding_model", pa.array(spaces))
    centroids = centroids_from_sums([identity_sums(faces)])
    rows = pair_new_identities(centroids, centroids.ids, CrossClipConfig())
    c1 = identity_of[("c1", 0)]
    assert "dlib" in centroids.spaces and rows
    assert all(c1 not in (r["identity_a"], r["identity_b"]) for r in rows)


def test_best_partner_is_the_most_similar_kept_one():
    faces, identity_of, _ = corpus()
    centroids = centroids_from_sums([identity_sums(faces)])
    rows = pair_new_identities(centroids, centroids.ids, CrossClipConfig())
    best = best_partners(rows)
    c0 = identity_of[("c0", 0)]
    mine = [r for r in rows if c0 in (r["identity_a"], r["identity_b"]) and r["status"] == "kept"]
    top = max(mine, key=lambda r: (r["similarity"], ))
    partner = top["identity_b"] if top["identity_a"] == c0 else top["identity_a"]
    assert best[c0][0] == partner and best[c0][2] == pytest.approx(top["similarity"])
    assert best[c0][0] != identity_of[("c5", 0)]  # the near-duplicate is never a partner
    assert identity_of[("c4", 2)] not in best  # alone in the corpus


def test_band_must_be_ordered():
    with pytest.raises(ValueError, match="min_similarity < max_similarity"):
        CrossClipConfig(min_similarity=0.9, max_similarity=0.5)

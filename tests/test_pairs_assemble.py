"""The samples record (Eq. 19): references, words, variants, provenance; and the table's readers."""

import io
import json

import numpy as np
import pytest
from pairs_data import clip_row, face_row, object_row, people, table

from curation.images import encode_png
from curation.pairs.assemble import AssembleConfig, assemble_sample, caption_word, choose_references
from schemas.ids import background_id, sample_id, variant_id
from schemas.io import write_table
from schemas.samples import sample_references
from schemas.validate import validate

PNG_B = encode_png(np.full((8, 8, 3), 200, np.uint8))


def generated(rows, kind, image=None):
    """Stage 4's variant rows; each source gets its own PNG (a mix-up of variants cannot pass)."""
    return [{"pair_id": variant_id(r[f"{kind}_id"]), "clip_id": r["clip_id"], "kind": kind,
             "source_id": r[f"{kind}_id"], "image": image or variant_png(r[f"{kind}_id"]), "status": "kept",
             "model": "tiny", "seed": 3, "prompt": "p"} for r in rows]


def variant_png(source_id: str) -> bytes:
    value = int.from_bytes(source_id.encode()[-4:], "little") % 251
    return encode_png(np.full((8, 8, 3), value, np.uint8))


def scene(caption="A man throws two red balls to his dogs"):
    clip = clip_row(caption=caption)
    man = object_row(clip, 0, "man", (30, 0, 50, 90), 0.7)
    ball = object_row(clip, 1, "ball", (90, 60, 10, 10), 0.8)
    dog = object_row(clip, 2, "dog", (0, 50, 30, 40), 0.6)
    face = face_row(clip, 0, clip["clip_id"] + "-i000", people(1)[0], box=(45, 5, 15, 18), det_score=0.9)
    pairs = generated([man, ball, dog], "object") + generated([face], "face")
    pairs.append({"pair_id": background_id(clip["clip_id"]), "clip_id": clip["clip_id"], "kind": "background",
                  "source_id": clip["clip_id"], "image": PNG_B, "status": "kept", "model": "opencv", "seed": 9,
                  "frame": 0})
    return clip, [face], [man, ball, dog], pairs


def test_words_are_the_captions_spelling_and_faces_take_their_persons_word():
    clip, faces, objects, pairs = scene()
    row = assemble_sample(clip, faces, objects, pairs, {}, AssembleConfig())
    assert row["sample_id"] == sample_id(clip["clip_id"])
    assert [(f["label"], f["source_id"]) for f in row["faces"]] == [("man", faces[0]["face_id"])]
    assert {o["source_id"]: o["label"] for o in row["objects"]} == {
        objects[0]["object_id"]: "man", objects[1]["object_id"]: "balls", objects[2]["object_id"]: "dogs"}
    assert row["subject_words"] == ["man", "balls", "dogs"]
    assert row["background"] == PNG_B and row["background_id"] == background_id(clip["clip_id"])
    refs = sample_references(row, use_variants=True)  # the order model/ reads: faces, objects, background
    assert [r.kind for r in refs] == ["face", "object", "object", "object", "background"]
    sources = [f["source_id"] for f in row["faces"]] + [o["source_id"] for o in row["objects"]]
    assert [r.image for r in refs[:4]] == [variant_png(sid) for sid in sources]
    assert len({r.image for r in refs[:4]}) == 4


def test_caption_word_finds_spellings_and_says_none_when_absent():
    assert caption_word("Two Puppies play", "puppy") == "Puppies"
    assert caption_word("a red car parks", "red car") == "red car"
    assert caption_word("a boxer", "box") is None  # whole words only
    assert caption_word("a cat", "dog") is None


@pytest.mark.parametrize("label, caption, word", [
    ("woman", "Two Women talk", "Women"), ("man", "three men run", "men"), ("person", "people dance", "people"),
    ("person", "two persons sit", "persons"), ("child", "children play", "children"),
    ("goose", "geese fly", "geese"), ("mouse", "mice hide", "mice"), ("glasses", "his glasses shine", "glasses"),
    ("jeans", "blue jeans hang", "jeans"), ("knife", "two knives", "knives"), ("woman", "a woman waves", "woman")])
def test_subject_words_for_irregular_plurals_and_plural_only_nouns(label, caption, word):
    """Labels are singular (``normalise_label``); the caption's word is found in its plural forms."""
    from curation.objects.labels import normalise_label

    assert normalise_label(word) == label      # caption word -> label
    assert caption_word(caption, label) == word  # label -> caption word
    assert caption_word("a glass of water", "glasses") is None  # "glasses" is not "glass"


def test_generated_and_cross_clip_variants_are_recorded():
    clip, faces, objects, pairs = scene()
    partner_face = face_row(clip_row(video="p" * 24), 0, "P-i000", people(1)[0])
    partners = {faces[0]["identity_id"]: ("P-i000", partner_face["clip_id"], 0.71)}
    row = assemble_sample(clip, faces, objects, pairs, {"P-i000": partner_face}, AssembleConfig(), partners)
    face = row["faces"][0]
    assert (face["variant_source"], face["variant_id"], face["variant"]) == (
        "cross_clip", partner_face["face_id"], partner_face["crop"])
    assert all(o["variant_source"] == "generated" and o["variant_id"] == variant_id(o["source_id"])
               for o in row["objects"])
    provenance = json.loads(row["provenance"])
    assert provenance["variants"][faces[0]["face_id"]]["similarity"] == pytest.approx(0.71)
    assert provenance["objects"] == [o["source_id"] for o in row["objects"]]
    assert provenance["background"]["model"] == "opencv" and provenance["background"]["seed"] == 9
    off = assemble_sample(clip, faces, objects, pairs, {"P-i000": partner_face},
                          AssembleConfig(cross_clip_variants=False), partners)
    assert off["faces"][0]["variant_source"] == "generated"


def solid(value: int) -> bytes:
    return encode_png(np.full((8, 8, 3), value, np.uint8))


def test_every_selected_face_of_an_identity_is_a_ranked_crop_with_its_own_variant():
    """Distinct PNGs for every reference and variant, so a mix-up cannot pass."""
    clip = clip_row(caption="a man waves")
    identity = clip["clip_id"] + "-i000"
    person = people(1)[0]
    faces = [face_row(clip, i, identity, person, rank=r, det_score=0.9 - 0.01 * i)
             for i, r in enumerate([2, 0, 1, 3])]
    faces.append(face_row(clip, 4, identity, person, rank=4, selected=False))
    obj = object_row(clip, 0, "man", (30, 0, 50, 90), 0.7)
    pairs = generated([faces[1]], "face", solid(11)) + generated([faces[0]], "face", solid(12))
    pairs += generated([obj], "object", solid(13))
    row = assemble_sample(clip, faces, [obj], pairs, {}, AssembleConfig())
    face = row["faces"][0]
    assert (face["source_id"], face["ref"], face["variant"]) == (faces[1]["face_id"], faces[1]["crop"], solid(11))
    assert [(c["face_id"], c["rank"], c["ref"], c["variant"]) for c in face["crops"]] == [
        (faces[2]["face_id"], 1, faces[2]["crop"], None),            # no variant of its own
        (faces[0]["face_id"], 2, faces[0]["crop"], solid(12)),       # its own generated variant
        (faces[3]["face_id"], 3, faces[3]["crop"], None)]            # the unselected face is left out
    assert row["objects"][0]["variant"] == solid(13)
    validate(table("samples", [row]), "samples")
    # Training's draw: face k of n, with the crop's own variant or else the identity's.
    for k, (ref, var) in enumerate([(faces[1]["crop"], solid(11)), (faces[2]["crop"], solid(11)),
                                    (faces[0]["crop"], solid(12)), (faces[3]["crop"], solid(11))]):
        picked = sample_references(row, use_variants=False, pick_face=lambda i, n, k=k: k)[0]
        varied = sample_references(row, use_variants=True, pick_face=lambda i, n, k=k: k)[0]
        assert (picked.image, varied.image) == (ref, var), k
    assert sample_references(row)[0].image == faces[1]["crop"]  # no picker: the best face
    many = [face_row(clip, i, identity, person, rank=i) for i in range(14)]
    assert len(assemble_sample(clip, many, [], [], {}, AssembleConfig())["faces"][0]["crops"]) == 9


def test_at_most_eight_references_chosen_by_score():
    clip = clip_row()
    objects = [object_row(clip, i, "ball", (i, 0, 4, 4), 0.05 * i) for i in range(12)]
    faces_, objects_, dropped = choose_references([], objects, 8)
    assert [o["object_id"] for o in objects_] == [objects[i]["object_id"] for i in range(11, 4, -1)]
    assert {d["id"] for d in dropped} == {objects[i]["object_id"] for i in range(5)}
    row = assemble_sample(clip, [], objects, generated(objects, "object"), {}, AssembleConfig())
    assert len(sample_references(row, use_variants=True)) == 7  # + a background when there is one
    assert len(json.loads(row["provenance"])["dropped"]) == 5


def test_no_reference_no_sample_and_missing_caption_is_an_error():
    clip = clip_row()
    assert assemble_sample(clip, [], [object_row(clip, 0, "x", (0, 0, 2, 2), 0.9, status="too_small")], [], {},
                           AssembleConfig()) is None
    clip_, faces, objects, pairs = scene()
    with pytest.raises(ValueError, match="no caption"):
        assemble_sample({**clip_, "caption": None}, faces, objects, pairs, {}, AssembleConfig())


def assembled_table():
    rows = []
    for caption in ("A man throws two red balls to his dogs", "a man and a dog"):
        clip, faces, objects, pairs = scene(caption)
        clip = {**clip, "clip_id": clip["clip_id"].replace("-0000000-", f"-{len(rows):07d}-")}
        rows.append(assemble_sample(clip, faces, objects, pairs, {}, AssembleConfig()))
    return table("samples", rows)


def test_samples_table_loads_unchanged_in_pandas_duckdb_and_datasets(tmp_path):
    import duckdb
    import pandas as pd
    from datasets import load_dataset
    from PIL import Image

    samples = validate(assembled_table(), "samples")
    path = tmp_path / "samples" / "part-0.parquet"
    write_table(samples, str(path), "samples")
    expected = samples.to_pylist()

    frame = pd.read_parquet(tmp_path / "samples")
    assert list(frame["sample_id"]) == [r["sample_id"] for r in expected]
    assert list(frame["background"]) == [r["background"] for r in expected]
    assert [list(f) for f in frame["subject_words"]] == [r["subject_words"] for r in expected]

    con = duckdb.connect()
    got = con.execute(f"select sample_id, caption, background, objects from read_parquet('{tmp_path}/samples/*.parquet') "
                      "order by sample_id").fetchall()
    assert [(g[0], g[1], bytes(g[2])) for g in got] == [(r["sample_id"], r["caption"], r["background"]) for r in expected]
    assert [bytes(o["variant"]) for o in got[0][3]] == [o["variant"] for o in expected[0]["objects"]]
    words = con.execute(f"select unnest(subject_words) from read_parquet('{tmp_path}/samples/*.parquet')").fetchall()
    assert sorted(w[0] for w in words) == sorted(w for r in expected for w in r["subject_words"])

    dataset = load_dataset("parquet", data_files=str(tmp_path / "samples" / "*.parquet"),
                           cache_dir=str(tmp_path / "hf"))["train"]
    assert dataset.num_rows == len(expected)
    for got_row, want in zip(dataset, expected):
        assert got_row["sample_id"] == want["sample_id"] and got_row["background"] == want["background"]
        assert [f["ref"] for f in got_row["faces"]] == [f["ref"] for f in want["faces"]]
        for png in [got_row["background"]] + [o["ref"] for o in got_row["objects"]] + [o["variant"] for o in got_row["objects"]]:
            with Image.open(io.BytesIO(png)) as image:
                image.load()
                assert image.format == "PNG" and image.size[0] > 0

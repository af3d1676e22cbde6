"""Variants I' from the tiny FLUX Kontext pipeline: sizes (the Kontext trap), prompts, seeds, isolation."""

import json

import numpy as np
import pyarrow as pa
import pytest
from pairs_data import disc_rgba, face_crop

from curation.envelope import to_table
from curation.images import decode_png, encode_png
from curation.pairs.generators import edit, fit_size, size_multiple
from curation.pairs.variants import (
    FACE_PROMPTS,
    OBJECT_PROMPTS,
    REF,
    Variants,
    VariantsConfig,
    choose_prompt,
    on_white,
    seed_for,
)
from schemas.tables import ERROR, INPUT


@pytest.fixture(scope="module")
def variants():
    return Variants(VariantsConfig(size=64, steps=2), models="tiny", device="cpu")


def request_rows():
    return [
        {INPUT: "clipA", "status": "kept", "kind": "face", "source_id": "clipA-f000", "label": None,
         REF: encode_png(face_crop())},
        {INPUT: "clipA", "status": "kept", "kind": "object", "source_id": "clipA-o000", "label": "ball",
         REF: encode_png(disc_rgba(40))},
        {INPUT: "clipA", "status": "kept", "kind": "background", "source_id": "clipA", "label": None, REF: None},
        {INPUT: "clipB", "status": "kept", "kind": "object", "source_id": "clipB-o000", "label": "tall lamp",
         REF: encode_png(np.full((120, 40, 4), 255, np.uint8))},
    ]


def test_kontext_output_size_is_the_asked_size_not_a_megapixel(variants):
    """FACTS.md's trap: without max_area/_auto_resize a 64 px request comes back 1024 px."""
    out = edit(variants.pipe, [face_crop()], ["make him smile"], [1], (64, 48), steps=2, guidance=2.5)
    assert out[0].shape == (48, 64, 3) and out[0].dtype == np.uint8


def test_every_face_and_object_gets_a_recorded_variant(variants):
    out = variants(to_table(request_rows())).to_pylist()
    by_id = {row["source_id"]: row for row in out}
    assert set(by_id) == {"clipA-f000", "clipA-o000", "clipA", "clipB-o000"}
    for source in ("clipA-f000", "clipA-o000", "clipB-o000"):
        row = by_id[source]
        image = decode_png(row["image"])
        params = json.loads(row["params"])
        assert image.shape == (params["height"], params["width"], 3)
        assert row["variant_source"] == "generated" and row["model"] == "tiny" and row["status"] == "kept"
        prompt, seed = choose_prompt(variants.config, row["kind"], source, row["label"])
        assert (row["prompt"], row["seed"]) == (prompt, seed)
    assert by_id["clipA-f000"]["prompt"] in FACE_PROMPTS
    assert by_id["clipA-o000"]["prompt"] in [p.replace("{label}", "ball") for p in OBJECT_PROMPTS]
    # A tall reference keeps a tall variant (aspect clamped to 2:1), about size^2 pixels.
    tall = json.loads(by_id["clipB-o000"]["params"])
    assert (tall["width"], tall["height"]) == fit_size(40, 120, 64 * 64, size_multiple(variants.pipe))
    assert tall["height"] > tall["width"]
    assert by_id["clipA"]["image"] is None  # the background row passes through untouched


def test_a_rerun_makes_bit_identical_variants(variants):
    first = variants(to_table(request_rows()[:2])).column("image").to_pylist()
    second = variants(to_table(request_rows()[:2])).column("image").to_pylist()
    assert first == second
    other = Variants.__new__(Variants)
    other.__dict__.update(variants.__dict__, config=VariantsConfig(size=64, steps=2, seed=7))
    assert other(to_table(request_rows()[:1])).column("image").to_pylist() != first[:1]


def test_prompts_are_drawn_from_the_bank_by_seed():
    config = VariantsConfig()
    drawn = {choose_prompt(config, "face", f"clip-f{i:03d}", None)[0] for i in range(200)}
    assert drawn == set(FACE_PROMPTS)  # every prompt of the bank is used
    assert choose_prompt(config, "face", "x", None) == choose_prompt(VariantsConfig(), "face", "x", None)
    assert seed_for(0, "face", "x") != seed_for(1, "face", "x") and 0 <= seed_for(0, "a") < 2 ** 63


def test_rgba_references_are_composited_on_white():
    rgba = disc_rgba(20)
    rgb = on_white(rgba)
    assert rgb.shape == (20, 20, 3)
    assert (rgb[0, 0] == 255).all() and tuple(rgb[10, 10]) == (200, 40, 40)


def test_a_broken_reference_settles_only_its_clip(variants):
    rows = request_rows()
    rows[3][REF] = b"not a png"
    out = variants(to_table(rows)).to_pylist()
    errors = [r for r in out if r["status"] == ERROR]
    assert [r[INPUT] for r in errors] == ["clipB"] and "UnidentifiedImageError" in errors[0]["_error_type"]
    assert all(r["image"] for r in out if r[INPUT] == "clipA" and r["kind"] != "background")


def test_config_rejects_an_empty_prompt_bank():
    with pytest.raises(ValueError, match="must not be empty"):
        VariantsConfig(face_prompts=[])
    with pytest.raises(ValueError, match="size"):
        VariantsConfig(size=4)


def test_fit_size_keeps_area_aspect_and_multiple():
    w, h = fit_size(300, 150, 512 * 512, 16)
    assert w % 16 == 0 and h % 16 == 0 and abs(w / h - 2) < 0.1 and abs(w * h / 512 ** 2 - 1) < 0.05
    assert fit_size(1000, 10, 64 * 64, 4) == fit_size(200, 100, 64 * 64, 4)  # aspect clamped at 2:1
    assert isinstance(pa.array([1]), pa.Array)

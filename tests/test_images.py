"""curation/images.py: the PNG and cut-out conventions stages 2-4 share."""

import numpy as np
import pytest

from curation.images import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGE_ERRORS,
    clip_box,
    crop_with_margin,
    decode_png,
    encode_png,
    mask_box,
    read_image,
    rgba_cutout,
)


def test_png_round_trips_every_layout():
    rng = np.random.default_rng(0)
    for shape in [(7, 9), (7, 9, 3), (7, 9, 4)]:
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        assert np.array_equal(decode_png(encode_png(array)), array)
    mask = rng.random((5, 6)) > 0.5
    assert np.array_equal(decode_png(encode_png(mask)) > 0, mask)
    assert decode_png(encode_png(np.zeros((4, 4, 3), np.uint8)), mode="RGBA").shape == (4, 4, 4)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((3, 3), np.float32))


def test_rgba_cutout_keeps_pixels_inside_and_mask_as_alpha():
    image = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:20, 30:45] = True
    mask[12, 29] = True  # one pixel sticking out widens the box by one column
    cut, box = rgba_cutout(image, mask)
    assert box == (29.0, 10.0, 16.0, 10.0) and cut.shape == (10, 16, 4)
    assert np.array_equal(cut[..., 3] > 0, mask[10:20, 29:45])
    assert np.array_equal(cut[..., :3], image[10:20, 29:45])
    with pytest.raises(ValueError, match="empty mask"):
        rgba_cutout(image, np.zeros((40, 60), bool))


def test_boxes_and_margins_stay_inside_the_frame():
    assert mask_box(np.zeros((3, 3), bool)) is None
    assert clip_box((-5.5, 2.2, 20, 4), 10, 10) == (0, 2, 10, 7)
    image = np.arange(100 * 80 * 3, dtype=np.uint32).reshape(100, 80, 3).astype(np.uint8)
    crop, box = crop_with_margin(image, (10, 20, 20, 10), 0.5)
    assert box == (0.0, 15.0, 40.0, 20.0) and crop.shape == (20, 40, 3)
    assert np.array_equal(crop, image[15:35, 0:40])
    with pytest.raises(ValueError, match="outside"):
        crop_with_margin(image, (200, 200, 5, 5), 0.1)


def test_read_image_reads_bytes_and_files_whole_and_fails_with_image_errors(tmp_path):
    png = encode_png(np.full((4, 6, 4), 7, np.uint8))
    (tmp_path / "a.png").write_bytes(png)
    for source in (png, tmp_path / "a.png", str(tmp_path / "a.png")):
        image = read_image(source)
        assert (image.size, image.mode) == ((6, 4), "RGBA")
    for bad in (b"", b"not an image", png[: len(png) // 2]):
        with pytest.raises(IMAGE_ERRORS):
            read_image(bad)


def test_clip_normalisation_is_transformers_openai_clip():
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    assert (CLIP_MEAN, CLIP_STD) == (tuple(OPENAI_CLIP_MEAN), tuple(OPENAI_CLIP_STD))

"""curation/images.py: the PNG and cut-out conventions stages 2-4 share."""

import numpy as np
import pytest

from curation.images import clip_box, crop_with_margin, decode_png, encode_png, mask_box, rgba_cutout


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

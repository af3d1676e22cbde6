"""Masked guidance (Eq. 1-4): canvas geometry, masks, shuffle, condition channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model.conditioning import ConditioningError, check_video_size, compose_canvas, encode_condition, grid_for

H, W = 480, 832
WHITE = np.array([255, 255, 255], dtype=np.uint8)


def noise_ref(w: int, h: int, seed: int) -> Image.Image:
    """A reference with no white pixel (values <= 200), so 'not white' means 'reference'."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 200, (h, w, 3), dtype=np.uint8))


# (cols, rows) of the release's layout, and reference sizes (w, h) of every aspect.
LAYOUT = {1: (1, 1), 2: (2, 1), 3: (3, 1), 4: (2, 2), 6: (3, 2), 8: (4, 2)}
SIZES = [(100, 200), (300, 120), (64, 64), (500, 500), (37, 91), (210, 33), (90, 90), (800, 30)]


def expected_box(k: int, n: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The spec re-derived: cell k of the grid, aspect-fit with int truncation, centred."""
    cols, rows = LAYOUT[n]
    c, r = k % cols, k // cols
    cw, ch = W // cols, H // rows
    cell_w = W - cw * c if c == cols - 1 else cw
    cell_h = H - ch * r if r == rows - 1 else ch
    w, h = size
    ratio = w / h  # the release's resize_and_pad: strict '>', int() of cw / r or ch * r
    if ratio > cell_w / cell_h:
        fw, fh = cell_w, int(cell_w / ratio)
    else:
        fw, fh = int(cell_h * ratio), cell_h
    return c * cw + (cell_w - fw) // 2, r * ch + (cell_h - fh) // 2, fw, fh


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 8])
def test_canvas_geometry_masks_and_pixels(n: int) -> None:
    refs = [noise_ref(*SIZES[k], seed=k) for k in range(n)]
    canvas = compose_canvas(refs, H, W)
    pixels = np.asarray(canvas.image)
    assert pixels.shape == (H, W, 3)
    # Mask is 1 exactly where a reference pixel landed: the refs hold no white pixel.
    landed = (pixels != WHITE).any(axis=-1)
    assert np.array_equal(canvas.region_mask, landed)
    assert np.array_equal(canvas.region_mask, canvas.subject_masks.any(axis=0))
    for k, ref in enumerate(refs):
        x, y, w, h = expected_box(k, n, ref.size)
        assert canvas.boxes[k] == (x, y, w, h)
        one = np.zeros((H, W), dtype=bool)
        one[y:y + h, x:x + w] = True
        assert np.array_equal(canvas.subject_masks[k], one)
        resized = np.asarray(ref.resize((w, h), Image.LANCZOS))
        assert np.array_equal(pixels[y:y + h, x:x + w], resized)
    assert (pixels[~canvas.region_mask] == WHITE).all()


def test_known_layout_two_refs() -> None:
    """Hand-computed: a 100x200 ref in a 416x480 cell → 240x480 at x=88."""
    canvas = compose_canvas([noise_ref(100, 200, 0), noise_ref(300, 120, 1)], H, W)
    assert canvas.boxes[0] == (88, 0, 240, 480)
    assert canvas.boxes[1] == (416, 157, 416, 166)  # 120*416/300 = 166.4 -> 166; (480-166)//2


def test_rgba_is_composited_over_white_and_mask_keeps_rectangle() -> None:
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[16:48, 16:48, 3] = 255  # opaque red square inside a transparent frame
    canvas = compose_canvas([Image.fromarray(rgba, "RGBA")], 64, 64)
    pixels = np.asarray(canvas.image)
    assert (pixels[20:40, 20:40] == [200, 0, 0]).all()
    assert (pixels[:8, :8] == WHITE).all()
    assert canvas.region_mask.all()  # R_k is the reference's rectangle (Eq. 1-2)


def test_shuffle_is_reproducible_changes_placement_and_keeps_ref_identity() -> None:
    refs = [noise_ref(*SIZES[k], seed=k) for k in range(8)]
    plain = compose_canvas(refs, H, W)
    a = compose_canvas(refs, H, W, rng=np.random.default_rng(7))
    b = compose_canvas(refs, H, W, rng=np.random.default_rng(7))
    c = compose_canvas(refs, H, W, rng=np.random.default_rng(8))
    assert a.boxes == b.boxes and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.boxes != plain.boxes and a.boxes != c.boxes
    pixels = np.asarray(a.image)
    for k, ref in enumerate(refs):  # masks and boxes still follow reference k
        x, y, w, h = a.boxes[k]
        assert np.array_equal(pixels[y:y + h, x:x + w], np.asarray(ref.resize((w, h), Image.LANCZOS)))
        assert a.subject_masks[k].sum() == w * h
    # 3 refs in a 3-cell grid, 5 refs in 6 cells: every ref lands, no overlap.
    five = compose_canvas(refs[:5], H, W, rng=np.random.default_rng(1))
    assert five.subject_masks.sum() == five.region_mask.sum()


def test_reference_count_limits() -> None:
    with pytest.raises(ConditioningError, match="at most 8"):
        compose_canvas([noise_ref(10, 10, k) for k in range(9)], H, W)
    with pytest.raises(ConditioningError, match="at least one"):
        compose_canvas([], H, W)
    assert grid_for(5) == (3, 2) and grid_for(7) == (4, 2)


def test_video_size_checks() -> None:
    check_video_size(480, 832, 81)
    with pytest.raises(ConditioningError, match="divisible by 16"):
        check_video_size(470, 832)
    with pytest.raises(ConditioningError, match="4k\\+1"):
        check_video_size(480, 832, 80)


@pytest.fixture(scope="module")
def tiny() -> dict:
    from model.tiny import tiny_wan_components

    return tiny_wan_components()


def test_condition_has_36_channels_and_mask_channels_match_region(tiny: dict) -> None:
    h, w, frames = 48, 64, 9
    canvas = compose_canvas([noise_ref(20, 30, 0), noise_ref(40, 10, 1), noise_ref(9, 9, 2)], h, w)
    with torch.no_grad():
        cond = encode_condition(tiny["vae"], canvas.image, canvas.region_mask, frames)
    t_lat = (frames - 1) // 4 + 1
    assert cond.shape == (1, 20, t_lat, h // 8, w // 8)
    assert 16 + cond.shape[1] == tiny["transformer"].config.in_channels == 36
    expected = np.zeros((h // 8, w // 8), dtype=np.float32)
    for i in range(h // 8):
        for j in range(w // 8):
            expected[i, j] = canvas.region_mask[8 * i:8 * i + 8, 8 * j:8 * j + 8].any()
    assert 0 < expected.sum() < expected.size  # the test image has both kinds of cells
    for c in range(4):
        assert np.array_equal(cond[0, c, 0].numpy(), expected)
    assert (cond[0, :4, 1:] == 0).all()


def test_condition_matches_diffusers_wan_i2v_for_a_full_canvas(tiny: dict) -> None:
    """One full-frame reference → mask all ones → exactly Wan I2V's own condition."""
    from diffusers import WanImageToVideoPipeline

    h, w, frames = 32, 48, 5
    image = noise_ref(w, h, 3)
    canvas = compose_canvas([image], h, w)
    assert canvas.region_mask.all()
    pipe = WanImageToVideoPipeline(**tiny)
    pixels = pipe.video_processor.preprocess(image, height=h, width=w).float()
    with torch.no_grad():
        _, theirs = pipe.prepare_latents(pixels, 1, 16, h, w, frames, torch.float32, "cpu",
                                         torch.Generator().manual_seed(0))
        ours = encode_condition(tiny["vae"], canvas.image, canvas.region_mask, frames)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)

"""Stage 2's mask work on constructed masks with known answers: Eq. 13-16 and the RGBA reference."""

from __future__ import annotations

import numpy as np
import pytest

from curation.images import decode_png, encode_mask, encode_png, mask_box, rgba_cutout
from curation.objects.filters import (
    DUPLICATE,
    IRREGULAR,
    OVERLAPS_FACE,
    TOO_SMALL,
    Candidate,
    FilterConfig,
    judge,
    mask_iou,
)
from curation.objects.morphology import MorphologyConfig, fill_holes, refine, significant_components, solidity
from schemas.tables import KEPT

H, W = 240, 320


def disc(cx, cy, r, shape=(H, W)):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2


def rect(x, y, w, h, shape=(H, W)):
    m = np.zeros(shape, bool)
    m[y:y + h, x:x + w] = True
    return m


def comb(x=40, y=60, teeth=10, tooth_w=6, gap=10, tooth_h=100, spine_h=12, shape=(H, W)):
    m = np.zeros(shape, bool)
    width = teeth * tooth_w + (teeth - 1) * gap
    m[y:y + spine_h, x:x + width] = True
    for k in range(teeth):
        m[y:y + tooth_h, x + k * (tooth_w + gap): x + k * (tooth_w + gap) + tooth_w] = True
    return m


def cand(mask, label="cup", score=0.9, frame=0, raw=None):
    return Candidate(label, score, frame, mask if raw is None else raw, mask)


# --------------------------------------------------------------------------- morphology (Eq. 13)

def test_speckled_disc_is_cleaned_to_the_disc():
    rng = np.random.default_rng(0)
    clean = disc(160, 120, 60)
    noisy = clean.copy()
    noisy[rng.random((H, W)) < 0.02] = True  # salt: isolated specks all over the frame
    pepper = rng.random((H, W)) < 0.02
    noisy[pepper & clean] = False  # pepper: pin holes inside the disc
    noisy[5:9, 5:9] = True  # a 4x4 blob far away: a separate component, not the object
    assert (noisy != clean).sum() > 1500
    refined = refine(noisy)
    assert refined.dtype == bool and refined.shape == clean.shape
    assert refined[5:9, 5:9].sum() == 0 and refined[~disc(160, 120, 63)].sum() == 0
    iou = (refined & clean).sum() / (refined | clean).sum()
    assert iou > 0.98, iou
    assert significant_components(refined) == 1 and solidity(refined) > 0.97


def test_refine_keeps_the_largest_component_and_fills_only_small_holes():
    two = disc(80, 120, 40) | disc(240, 120, 20)
    assert significant_components(two) == 2
    out = refine(two)
    assert out[120, 80] and not out[120, 240]
    ring = disc(160, 120, 80) & ~disc(160, 120, 50)  # a big hole (64% of the ring's area)
    assert not refine(ring)[120, 160]  # a ring keeps its hole
    small_hole = disc(160, 120, 80) & ~disc(160, 120, 8)
    assert refine(small_hole)[120, 160]
    assert fill_holes(ring, max_fraction=1.0)[120, 160]


def test_refine_does_not_glue_an_object_to_the_frame_border():
    m = rect(0, 50, 60, 80)
    m[50:130, 3] = False  # a slit 3 px from the left edge
    out = refine(m, MorphologyConfig(min_kernel=3))
    assert out[90, 10] and out.shape == m.shape
    assert not refine(np.zeros((H, W), bool)).any()


# --------------------------------------------------------------------------- filters (Eq. 14-16)

def test_a_10_px_blob_is_too_small():
    blob = np.zeros((H, W), bool)
    blob[100:102, 100:105] = True
    assert blob.sum() == 10
    (verdict,) = judge([cand(blob)], {}, H * W)
    assert verdict.status == TOO_SMALL and verdict.area == 10
    (big,) = judge([cand(disc(160, 120, 40))], {}, H * W)
    assert big.status == KEPT


def test_theta_min_is_a_fraction_of_the_frame():
    square = rect(10, 10, 30, 30)  # 900 px = 1.17 % of 240x320
    assert judge([cand(square)], {}, H * W, FilterConfig(theta_min=0.01))[0].status == KEPT
    assert judge([cand(square)], {}, H * W, FilterConfig(theta_min=0.02))[0].status == TOO_SMALL


def test_a_comb_is_irregular_even_after_refinement():
    raw = comb()
    refined = refine(raw)
    assert solidity(refined) < 0.5  # the teeth survive the size-scaled opening
    (verdict,) = judge([cand(refined, raw=raw)], {}, H * W)
    assert verdict.status == IRREGULAR and verdict.solidity < 0.5
    assert judge([cand(rect(60, 60, 150, 100))], {}, H * W)[0].status == KEPT


def test_a_mask_in_many_sizeable_pieces_is_irregular():
    pieces = np.zeros((H, W), bool)
    for k in range(5):
        pieces |= disc(40 + 60 * k, 120, 20)
    refined = refine(pieces)  # one piece remains and is a clean disc
    (verdict,) = judge([cand(refined, raw=pieces)], {}, H * W)
    assert verdict.status == IRREGULAR and verdict.components == 5
    assert verdict.solidity > 0.95


def overlap_pair(target_iou):
    """An object rectangle and a face rectangle of the same height whose IoU is exactly ``target_iou``."""
    w, h = 100, 60
    # IoU = ov / (2w - ov)  ->  ov = 2w * iou / (1 + iou)
    ov = int(round(2 * w * target_iou / (1 + target_iou)))
    obj, face = rect(50, 80, w, h), rect(50 + w - ov, 80, w, h)
    return obj, face


@pytest.mark.parametrize("target, status", [(0.3, OVERLAPS_FACE), (0.2, KEPT)])
def test_face_overlap_filter(target, status):
    obj, face = overlap_pair(target)
    assert mask_iou(obj, face) == pytest.approx(target, abs=0.005)
    (verdict,) = judge([cand(obj)], {0: [face]}, H * W)
    assert verdict.status == status
    assert verdict.face_iou == pytest.approx(target, abs=0.005)


@pytest.mark.parametrize("overlap, status", [(40, KEPT), (41, OVERLAPS_FACE)])
def test_face_overlap_at_the_eq16_boundary(overlap, status):
    """Eq. 16 keeps IoU <= 0.25: exactly 0.25 (40 of 100 columns overlap: 2400 / 9600) is kept,
    the next column (41: 0.2579) is ``overlaps_face``."""
    w, h = 100, 60
    obj, face = rect(50, 80, w, h), rect(50 + w - overlap, 80, w, h)
    (verdict,) = judge([cand(obj)], {0: [face]}, H * W)
    assert verdict.status == status
    assert verdict.face_iou == (0.25 if overlap == 40 else pytest.approx(41 / 159))


def test_face_masks_count_only_on_their_own_frame():
    obj, face = overlap_pair(0.6)
    (verdict,) = judge([cand(obj, frame=1)], {0: [face]}, H * W)
    assert verdict.status == KEPT and verdict.face_iou == 0.0


def test_two_overlapping_masks_of_one_label_leave_one_duplicate():
    a, b = rect(50, 50, 100, 100), rect(55, 52, 100, 100)  # IoU ~0.87
    assert mask_iou(a, b) > 0.8
    other_label = rect(52, 50, 100, 100)
    far = rect(200, 50, 100, 100)
    candidates = [cand(a, score=0.5), cand(b, score=0.7), cand(other_label, label="bag", score=0.6),
                  cand(far, score=0.4)]
    statuses = [v.status for v in judge(candidates, {}, H * W)]
    assert statuses == [DUPLICATE, KEPT, KEPT, KEPT]  # the higher score keeps it


def test_a_kept_object_is_never_a_duplicate_of_a_filtered_one():
    body = rect(60, 60, 150, 100)
    fragmented = body.copy()
    fragmented[:, [90, 120, 150, 180]] = False  # SAM2 gave it in five pieces: irregular
    verdicts = judge([cand(body, score=0.9, raw=fragmented), cand(body, score=0.5)], {}, H * W)
    assert [v.status for v in verdicts] == [IRREGULAR, KEPT]


def test_mask_iou_matches_the_definition_on_random_masks():
    rng = np.random.default_rng(1)
    for _ in range(5):
        a, b = rng.random((40, 50)) < 0.3, rng.random((40, 50)) < 0.3
        assert mask_iou(a, b) == pytest.approx((a & b).sum() / (a | b).sum())
    assert mask_iou(rect(0, 0, 10, 10), rect(20, 20, 10, 10)) == 0.0


# --------------------------------------------------------------------------- the reference image

def test_rgba_cutout_alpha_is_the_mask_and_pixels_are_the_frame():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask = refine(disc(250, 200, 50))  # touches the bottom edge: the box must stay inside the frame
    rgba, box = rgba_cutout(frame, mask)
    assert box == mask_box(mask)
    x, y, w, h = (int(v) for v in box)
    assert 0 <= x and 0 <= y and x + w <= W and y + h <= H
    assert rgba.shape == (h, w, 4) and rgba.dtype == np.uint8
    inside = mask[y:y + h, x:x + w]
    assert np.array_equal(rgba[..., 3] > 0, inside) and set(np.unique(rgba[..., 3])) == {0, 255}
    assert np.array_equal(rgba[..., :3][inside], frame[y:y + h, x:x + w][inside])
    # it survives the PNG round trip unchanged
    back = decode_png(encode_png(rgba))
    assert np.array_equal(back, rgba)
    with pytest.raises(ValueError, match="empty"):
        rgba_cutout(frame, np.zeros((H, W), bool))


@pytest.mark.parametrize("shape", [(240, 320), (7, 13), (1, 1)])
def test_masks_round_trip_as_1_bit_pngs(shape):
    mask = np.random.default_rng(5).random(shape) < 0.4
    data = encode_mask(mask)
    back = decode_png(data)
    assert back.dtype == bool and np.array_equal(back, mask)
    assert set(np.unique(decode_png(data, mode="L"))) <= {0, 255}
    assert np.array_equal(decode_png(data, mode="L") > 0, mask)
    if mask.size > 1000:
        assert len(data) < len(encode_png(mask))


# --------------------------------------------------------------------------- a clip's rows

def test_object_rows_of_a_constructed_clip():
    from curation.objects.grounding import Detection
    from curation.objects.references import ReferencesConfig, object_rows

    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (2, H, W, 3), dtype=np.uint8)
    head, face = disc(60, 60, 30), disc(60, 60, 26)  # a "hat" mask that is mostly the face
    ball = disc(220, 150, 45)
    ball_again = disc(223, 151, 45)
    speck = rect(5, 200, 3, 3)
    detections = [Detection("ball", 1, 0.9, (175, 105, 265, 195)), Detection("ball", 1, 0.8, (178, 106, 268, 196)),
                  Detection("hat", 1, 0.7, (30, 30, 90, 90)), Detection("cup", 0, 0.6, (5, 200, 8, 203)),
                  Detection("human face", 1, 0.95, (34, 34, 86, 86), face=True)]
    masks = [ball, ball_again, head, speck, face]
    clip = {"clip_id": "vid-0000010-0000090", "width": 2 * W, "height": 2 * H}  # keyframes at half size
    rows = object_rows(clip, images, np.array([17, 42]), detections, masks, MorphologyConfig(), FilterConfig())
    assert [(r["label"], r["status"]) for r in rows] == [
        ("ball", KEPT), ("ball", DUPLICATE), ("hat", OVERLAPS_FACE), ("cup", TOO_SMALL)]
    assert [r["object_id"] for r in rows] == [f"vid-0000010-0000090-o{i:03d}" for i in range(4)]
    first = rows[0]
    assert first["frame"] == 42 and first["clip_id"] == clip["clip_id"]
    assert first["box"] == pytest.approx([350, 210, 180, 180])  # source pixels: twice the keyframe's
    mask = decode_png(first["mask"]) > 0
    assert mask.shape == (H, W) and np.array_equal(mask, refine(ball)) and first["area"] == mask.sum()
    ref = decode_png(first["ref"])
    x, y, w, h = (int(v) for v in mask_box(mask))
    assert np.array_equal(ref[..., 3] > 0, mask[y:y + h, x:x + w])
    assert np.array_equal(ref[..., :3][mask[y:y + h, x:x + w]], images[1][y:y + h, x:x + w][mask[y:y + h, x:x + w]])
    assert rows[2]["face_iou"] > 0.25 and rows[0]["face_iou"] == 0.0
    lean = object_rows(clip, images, np.array([17, 42]), detections, masks, MorphologyConfig(), FilterConfig(),
                       ReferencesConfig(keep_filtered_images=False))
    assert [r["ref"] is None for r in lean] == [False, True, True, True]
    assert [r["area"] for r in lean] == [r["area"] for r in rows]
    assert object_rows(clip, images, np.array([17, 42]), [], [], MorphologyConfig(), FilterConfig()) == []

"""The released MAGREF inference, point by point: CLIP input, negative prompt, timesteps,
canvas-fit rounding, seeded reference shuffle, tiny sizes (issue 10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from curation.images import CLIP_MEAN, CLIP_STD
from model.conditioning import (
    ConditioningError,
    clip_canvas_pixels,
    compose_canvas,
    fit_size,
)

H, W = 480, 832
CLIP_SIZE = 224  # Wan's CLIP ViT-H/14 input


def noise_ref(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 200, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def clip_pipe():
    """Tiny components, but a CLIP encoder at the real 224 px input and the processor config
    that ships with Wan2.1-I2V diffusers checkpoints (shortest edge 224, centre crop 224)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    from model.tiny import tiny_components

    pipe = tiny_components("cpu")
    pipe.image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        image_size=CLIP_SIZE, patch_size=32)).eval()
    pipe.image_processor = CLIPImageProcessor(
        size={"shortest_edge": CLIP_SIZE}, crop_size={"height": CLIP_SIZE, "width": CLIP_SIZE},
        image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    return pipe


@pytest.fixture(scope="module")
def canvas_pixels() -> np.ndarray:
    """A 4-reference canvas (the case where a centre crop loses most of the outer refs)."""
    refs = [noise_ref(w, h, k) for k, (w, h) in enumerate([(300, 500), (200, 200), (640, 360), (90, 300)])]
    return np.asarray(compose_canvas(refs, H, W).image).copy()


def columns_seen(pipe, base: np.ndarray, clip_input: str) -> list[int]:
    """The 8-px canvas columns whose change (inverted pixels, full height) changes CLIP's input."""
    reference = pipe.clip_pixel_values(Image.fromarray(base), clip_input)
    seen = []
    for c in range(W // 8):
        changed = base.copy()
        changed[:, 8 * c:8 * c + 8] = 255 - changed[:, 8 * c:8 * c + 8]
        pixels = pipe.clip_pixel_values(Image.fromarray(changed), clip_input)
        if (pixels - reference).abs().max() > 1e-3:
            seen.append(c)
    return seen


def test_clip_sees_every_8px_column_of_the_canvas(clip_pipe, canvas_pixels) -> None:
    """Release behaviour: the whole canvas is squashed into CLIP's square, every column counts."""
    assert columns_seen(clip_pipe, canvas_pixels, "squash") == list(range(W // 8))
    # diffusers' processor (shortest-edge resize + centre crop) never sees the outer columns:
    # this is what the squash fixes.
    # Only x = 168..663 (62 of 104 columns, 60% of the canvas) reach it.
    assert columns_seen(clip_pipe, canvas_pixels, "crop") == list(range(21, 83))


def test_clip_squash_geometry_and_normalisation(clip_pipe) -> None:
    # A uniform canvas stays uniform; values are CLIP-normalised [0, 1] colours.
    colour = (200, 100, 50)
    flat = clip_pipe.clip_pixel_values(Image.new("RGB", (W, H), colour))
    assert flat.shape == (1, 3, CLIP_SIZE, CLIP_SIZE)
    for ch in range(3):
        expected = (colour[ch] / 255 - CLIP_MEAN[ch]) / CLIP_STD[ch]
        assert torch.allclose(flat[0, ch], torch.full_like(flat[0, ch], expected), atol=1e-5)
    # Left half black, right half white: the boundary at canvas x=416 lands in the middle of
    # the square (no crop, no padding): output column j samples x = (j + 0.5) * 832/224 - 0.5.
    halves = np.zeros((H, W, 3), dtype=np.uint8)
    halves[:, W // 2:] = 255
    out = clip_canvas_pixels(Image.fromarray(halves), CLIP_SIZE)[0, 0]
    black, white = (0 - CLIP_MEAN[0]) / CLIP_STD[0], (1 - CLIP_MEAN[0]) / CLIP_STD[0]
    assert torch.allclose(out[:, :110], torch.full_like(out[:, :110], black), atol=1e-5)
    assert torch.allclose(out[:, 114:], torch.full_like(out[:, 114:], white), atol=1e-5)


def test_encode_image_feeds_the_squashed_canvas_to_clip(clip_pipe, canvas_pixels) -> None:
    seen = {}
    original = clip_pipe.image_encoder.forward

    def spy(pixel_values, **kwargs):
        seen["pixels"] = pixel_values
        return original(pixel_values=pixel_values, **kwargs)

    clip_pipe.image_encoder.forward = spy
    try:
        image = Image.fromarray(canvas_pixels)
        embeds = clip_pipe.encode_image(image)
    finally:
        clip_pipe.image_encoder.forward = original
    assert torch.equal(seen["pixels"], clip_pipe.clip_pixel_values(image, "squash"))
    assert embeds.shape == (1, (CLIP_SIZE // 32) ** 2 + 1, 16)


# Wan2.1's sample_neg_prompt (wan/configs/shared_config.py), as published.
WAN_NEG = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
           "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
           "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")


def test_negative_prompt_is_wans_with_the_camera_shake_prefix() -> None:
    from model.pipeline import DEFAULTS, MAGREF_NEGATIVE_PROMPT
    from model.sample import build_parser
    from model.tiny import TINY_DEFAULTS, tiny_components

    assert DEFAULTS.negative_prompt == MAGREF_NEGATIVE_PROMPT == "镜头晃动，" + WAN_NEG
    assert TINY_DEFAULTS.negative_prompt == "镜头晃动，" + WAN_NEG
    assert build_parser().parse_args(["--ref", "a.png"]).negative_prompt == "镜头晃动，" + WAN_NEG
    pipe = tiny_components("cpu")
    prompts = []
    original = pipe.encode_prompt
    pipe.encode_prompt = lambda texts, **kw: prompts.extend(texts) or original(texts, **kw)
    pipe([noise_ref(20, 30, 0)], "a man", height=32, width=48, num_frames=5,
         num_inference_steps=1, output_type="latent")
    assert prompts == ["a man", "镜头晃动，" + WAN_NEG]


def release_timesteps(steps: int, shift: float) -> list[int]:
    """The release's grid, from the formula: sigma from 0.999 down to 0 in ``steps`` equal
    steps (the endpoint 0 dropped), shifted s' = shift*s / (1 + (shift-1)*s), t = int(1000 s')."""
    out = []
    for i in range(steps):
        s = 0.999 - 0.999 * i / steps
        s = shift * s / (1 + (shift - 1) * s)
        out.append(int(s * 1000))
    return out


def test_timesteps_are_the_releases_40_step_shift_3_grid() -> None:
    from model.tiny import tiny_components

    expected = release_timesteps(40, 3.0)
    # By hand: 3*0.999/2.998 = 0.99967; 3*0.4995/1.999 = 0.74962; 3*0.024975/1.04995 = 0.07136.
    assert (expected[0], expected[20], expected[39]) == (999, 749, 71)
    pipe = tiny_components("cpu")
    pipe.set_timesteps(40, "cpu")
    got = pipe.scheduler.timesteps.tolist()
    assert (got[0], got[20], got[39]) == (expected[0], expected[20], expected[39])
    assert got == expected
    sigmas = pipe.scheduler.sigmas
    assert sigmas[-1] == 0 and len(sigmas) == 41
    assert abs(float(sigmas[39]) - 3 * 0.024975 / (1 + 2 * 0.024975)) < 1e-6
    # diffusers' own grid (linspace(1, 1/1000)) ends elsewhere: 74 instead of 71.
    pipe.set_timesteps(40, "cpu", "diffusers")
    assert pipe.scheduler.timesteps.tolist()[-1] == 74
    # A sampling call uses the release's grid by default.
    pipe([noise_ref(20, 30, 0)], "a dog", height=32, width=48, num_frames=5,
         num_inference_steps=4, output_type="latent")
    assert pipe.scheduler.timesteps.tolist() == release_timesteps(4, 3.0)


def release_fit(w: int, h: int, cw: int, ch: int) -> tuple[int, int]:
    """``resize_and_pad`` of the release, re-derived: ratio test with '>', int() truncation."""
    img_ratio, target_ratio = w / h, cw / ch
    if img_ratio > target_ratio:
        return cw, int(cw / img_ratio)
    return int(ch * img_ratio), ch


def test_canvas_fit_equals_the_release_formula_on_a_sweep() -> None:
    assert fit_size((205, 200), (832, 480)) == (491, 480)  # 480 * 1.025 truncates to 491
    cells = [(832, 480), (416, 480), (277, 480), (278, 480), (416, 240), (277, 240), (278, 240),
             (208, 240)]
    checked = differs_from_naive = 0
    for cw, ch in cells:
        for w in range(16, 1300, 13):
            for h in range(16, 1300, 29):
                want = release_fit(w, h, cw, ch)
                assert fit_size((w, h), (cw, ch)) == want, (w, h, cw, ch)
                checked += 1
                naive = (cw, int(h * cw / w)) if w / h >= cw / ch else (int(w * ch / h), ch)
                differs_from_naive += naive != want
    assert checked > 30000 and differs_from_naive > 0  # the sweep reaches the 1-px cases
    canvas = compose_canvas([noise_ref(205, 200, 0)], H, W)
    assert canvas.boxes[0] == ((W - 491) // 2, 0, 491, 480)


def test_shuffle_seed_reproduces_a_random_layout() -> None:
    from model.tiny import tiny_components

    pipe = tiny_components("cpu")
    refs = [noise_ref(20 + 3 * k, 30, k) for k in range(5)]
    kwargs = dict(height=64, width=112, num_frames=5, num_inference_steps=1, output_type="latent")
    a = pipe(refs, "a man", shuffle_seed=3, **kwargs).canvas
    b = pipe(refs, "a man", shuffle_seed=3, **kwargs).canvas
    plain = pipe(refs, "a man", **kwargs).canvas
    assert a.boxes == b.boxes != plain.boxes
    assert a.boxes == compose_canvas(refs, 64, 112, rng=np.random.default_rng(3)).boxes
    assert plain.boxes == compose_canvas(refs, 64, 112).boxes


def test_sizes_beyond_the_rotary_table_are_a_clear_error() -> None:
    from model.tiny import TINY_DEFAULTS, tiny_components

    pipe = tiny_components("cpu")
    with pytest.raises(ConditioningError, match="rope_max_seq_len is 32: use at most 512 px wide"):
        pipe([noise_ref(20, 30, 0)], "a man", height=480, width=832, num_frames=5)
    # The tiny preset's own sizes fit (and keep the release's aspect ratio, about 1.73).
    assert pipe.defaults == TINY_DEFAULTS
    assert abs(TINY_DEFAULTS.width / TINY_DEFAULTS.height - W / H) < 0.05
    out = pipe([noise_ref(20, 30, 0)], "a man", num_inference_steps=1, output_type="latent")
    assert out.canvas.image.size == (TINY_DEFAULTS.width, TINY_DEFAULTS.height)

"""The background reference I^Bg: a keyframe with every subject removed, then augmented (B.4, Eq. 19).

Why it exists: with the background as its own reference, the model learns to put the
subjects *into* a scene instead of copying the scene they were cut from.

1. **Keyframe**: the frame of the clip where stages 2-3 saw the most subjects (ties:
   nearest the clip's middle), so their masks and boxes describe that frame.
2. **Mask**: the union of every object mask of the clip (objects at other frames too:
   a subject rarely moves far within a clip, and a larger hole beats a leftover ghost),
   the face boxes at the keyframe grown by ``face_margin`` (hair, ears, neck), dilated by
   ``dilation`` x the frame diagonal (soft edges, shadows).
3. **Inpainting**: ``backend="model"``: the ``inpainter`` role (SDXL inpainting by
   default) with a prompt for an empty scene; ``backend="opencv"``: Telea inpainting, CPU
   only, fast, blurrier. Pixels outside the mask are kept (feathered composite), so the
   scene stays the clip's own.
4. **Augmentation** (seeded by the clip id, recorded in ``params``): horizontal flip,
   a random crop, brightness/contrast/saturation jitter.

A mask over more than ``max_masked`` of the frame would make the background mostly
invented: that row gets status ``too_masked`` and no image.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from curation.envelope import put_column, run_isolated
from curation.frames import FRAMES, at_frames, decode_frames, drop_frames, encode_frames, read_clip_frames
from curation.images import clip_box, decode_png, encode_png
from curation.models import load, resolve
from curation.operator import ActorPool, TaskPool, setting
from curation.pairs.generators import inpaint
from curation.pairs.variants import BACKGROUND, OUTPUT_COLUMNS, fill_columns, seed_for

SUBJECTS = "_subjects"  # private column: list<struct<kind, frame, box, mask>> of the clip's subjects
OPENCV = "opencv"
TOO_MASKED = "too_masked"


@dataclass
class BackgroundConfig:
    enabled: bool = setting(True, help="False: no background references (samples then have none)")
    backend: str = setting("model", help='"model": the inpainter role; "opencv": Telea inpainting on CPU, no model')
    max_side: int = setting(1024, help="the keyframe is scaled to fit this (SDXL inpainting's native size)")
    face_margin: float = setting(0.6, help="face boxes grow by this x their size on each side before removal")
    dilation: float = setting(0.02, help="the union mask grows by this fraction of the frame diagonal")
    max_masked: float = setting(0.8, help="above this fraction of the frame masked: status too_masked, no image")
    prompt: str = setting("an empty scene with nobody in it; only the background and the surroundings", help=
        "inpainting prompt")
    negative_prompt: str = setting("person, people, face, body, hands, animal, object, text, watermark", help=
        "what must not reappear")
    steps: int = setting(30, help="inpainting denoising steps")
    guidance: float = setting(7.0, help="inpainting classifier-free guidance")
    strength: float = setting(0.99, help="how far the hole is re-noised (SDXL inpainting's recommended < 1)")
    seed: int = setting(0, help="base seed: each clip's inpainting and augmentation seed comes from it and the clip id")
    flip: float = setting(0.5, help="augmentation: probability of a horizontal flip")
    crop: float = setting(0.85, help="augmentation: a random crop keeps at least this fraction of each side")
    jitter: float = setting(0.1, help="augmentation: brightness, contrast, saturation change by up to +- this")
    decode_pool: TaskPool = setting(factory=lambda: TaskPool(batch_size=4, num_cpus=0.5), help="keyframe + mask")
    pool: ActorPool = setting(factory=lambda: ActorPool(actors=1, batch_size=1, num_cpus=0.5, num_gpus=0.25), help=
        "The inpainter; with backend=opencv the same batch size and CPUs, as Ray tasks (no model, no GPU).")

    def __post_init__(self) -> None:
        if self.backend not in ("model", OPENCV):
            raise ValueError(f"background.backend must be 'model' or 'opencv', got {self.backend!r}")
        if not 0 < self.crop <= 1 or not 0 <= self.flip <= 1 or not 0 < self.max_masked <= 1:
            raise ValueError("background.crop and max_masked must be in (0, 1], flip in [0, 1]")
        if self.max_side < 16 or self.steps < 1:
            raise ValueError("background.max_side must be >= 16 and steps >= 1")


# --------------------------------------------------------------------------- keyframe and mask


def choose_keyframe(subjects: Sequence[dict], start_frame: int, end_frame: int) -> int:
    """The clip frame with the most subjects seen on it; ties go to the one nearest the middle."""
    counts = Counter(int(s["frame"]) for s in subjects
                     if s.get("frame") is not None and start_frame <= int(s["frame"]) < end_frame)
    middle = (start_frame + end_frame - 1) / 2
    if not counts:
        return int(middle)
    return min(counts, key=lambda f: (-counts[f], abs(f - middle), f))


def subject_mask(width: int, height: int, subjects: Sequence[dict], keyframe: int, face_margin: float) -> np.ndarray:
    """The union (uint8 0/255, source pixels) of object masks and the keyframe's grown face boxes."""
    union = np.zeros((height, width), np.uint8)
    for subject in subjects:
        box = subject.get("box")
        if subject.get("kind") == "face":
            if subject.get("frame") is None or int(subject["frame"]) != keyframe or box is None:
                continue
            x, y, w, h = box
            x0, y0, x1, y1 = clip_box((x - face_margin * w, y - face_margin * h, w * (1 + 2 * face_margin),
                                       h * (1 + 2 * face_margin)), width, height)
            union[y0:y1, x0:x1] = 255
        elif subject.get("mask"):
            _paste_mask(union, decode_png(subject["mask"], "L"), box)
        elif box is not None:
            x0, y0, x1, y1 = clip_box(box, width, height)
            union[y0:y1, x0:x1] = 255
    return union


def _paste_mask(union: np.ndarray, mask: np.ndarray, box: Any) -> None:
    """Or a mask into the union: a whole-frame mask (any scale) as the frame, any other into its box.

    Stage 2 stores whole-frame masks at the resolution it decoded (often below the
    source's): a mask with the frame's aspect ratio that is not its box's size is one.
    """
    import cv2

    height, width = union.shape
    boxed = box is not None and abs(mask.shape[1] - box[2]) <= 2 and abs(mask.shape[0] - box[3]) <= 2
    frame_shaped = abs(mask.shape[1] / mask.shape[0] - width / height) <= 0.02 * width / height
    if box is None and not frame_shaped:
        raise ValueError(f"an object mask of {mask.shape[1]}x{mask.shape[0]} is not frame-shaped and has no box")
    if frame_shaped and not boxed:
        if mask.shape != union.shape:
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
        np.maximum(union, np.where(mask > 0, 255, 0).astype(np.uint8), out=union)
        return
    x0, y0, x1, y1 = clip_box(box, width, height)
    if x1 <= x0 or y1 <= y0:
        return  # the box lies outside the frame
    fitted = cv2.resize(mask, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    region = union[y0:y1, x0:x1]
    np.maximum(region, np.where(fitted > 0, 255, 0).astype(np.uint8), out=region)


def work_size(width: int, height: int, max_side: int, multiple: int = 16) -> tuple[int, int]:
    """The frame scaled to fit ``max_side`` (never up), sides rounded to multiples of ``multiple``."""
    scale = min(1.0, max_side / max(width, height))
    return (max(multiple, int(round(width * scale / multiple)) * multiple),
            max(multiple, int(round(height * scale / multiple)) * multiple))


def dilate(mask: np.ndarray, fraction: float) -> np.ndarray:
    import cv2

    radius = max(1, int(round(fraction * float(np.hypot(*mask.shape[:2])))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask, kernel)


# --------------------------------------------------------------------------- inpainting and augmentation


def inpaint_opencv(image: np.ndarray, mask: np.ndarray, max_side: int = 384) -> np.ndarray:
    """Telea's fast marching inpainting: CPU, no model, fills from the hole's border inwards.

    Its cost grows with hole area x radius^2, and what it fills a hole with is smooth
    anyway, so it runs on a copy at most ``max_side`` px and the fill is scaled back up
    (``composite`` keeps every pixel outside the mask at full resolution).
    """
    import cv2

    height, width = mask.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    small = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    work = cv2.resize(image, small, interpolation=cv2.INTER_AREA) if scale < 1 else np.ascontiguousarray(image)
    hole = cv2.resize(mask, small, interpolation=cv2.INTER_NEAREST) if scale < 1 else mask
    hole = cv2.dilate((hole > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) if scale < 1 else (hole > 0).astype(np.uint8)
    filled = cv2.inpaint(work, hole, 3, cv2.INPAINT_TELEA)
    return cv2.resize(filled, (width, height), interpolation=cv2.INTER_CUBIC) if scale < 1 else filled


def remove_subjects(image: np.ndarray, mask: np.ndarray, config: BackgroundConfig, pipe: Any = None,
                    seed: int = 0) -> np.ndarray:
    """``image`` with the mask's pixels (uint8, >0 = subject) filled and blended back over the
    original: by the inpainter ``pipe`` (at a ``work_size`` of ``config.max_side`` when the image
    is not one already) or, without one, by Telea. Stage 4's backgrounds and the evaluator's
    Bg-Sim (Eq. 24) share it, so both remove subjects the same way."""
    import cv2

    if pipe is None:
        return composite(image, inpaint_opencv(image, mask), mask)
    height, width = image.shape[:2]
    size = work_size(width, height, config.max_side)
    resized = size != (width, height)
    work = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if resized else image
    hole = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST) if resized else mask
    filled = inpaint(pipe, work, hole, config.prompt, config.negative_prompt, seed, config.steps, config.guidance,
                     config.strength)
    if resized:
        filled = cv2.resize(filled, (width, height), interpolation=cv2.INTER_CUBIC)
    return composite(image, filled, mask)


def composite(original: np.ndarray, filled: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Filled pixels inside the mask, the original outside, blended over a few pixels at the edge."""
    import cv2

    soft = cv2.GaussianBlur((mask > 0).astype(np.float32), (0, 0), sigmaX=max(1.0, 0.004 * float(np.hypot(*mask.shape))))
    alpha = np.maximum(soft, (mask > 0).astype(np.float32))[..., None]  # the hole itself stays fully filled
    return (filled.astype(np.float32) * alpha + original.astype(np.float32) * (1 - alpha) + 0.5).astype(np.uint8)


def augment(image: np.ndarray, seed: int, config: BackgroundConfig) -> tuple[np.ndarray, dict]:
    """A seeded flip, crop and colour jitter; returns the image and the parameters drawn."""
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    flip = bool(rng.random() < config.flip)
    keep = float(rng.uniform(config.crop, 1.0))
    crop_w, crop_h = max(1, int(round(width * keep))), max(1, int(round(height * keep)))
    x0, y0 = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    brightness, contrast, saturation = (float(v) for v in rng.uniform(-config.jitter, config.jitter, 3))
    out = image[y0:y0 + crop_h, x0:x0 + crop_w].astype(np.float32)
    if flip:
        out = out[:, ::-1]
    out = out * (1 + brightness)
    out = (out - out.mean()) * (1 + contrast) + out.mean()
    gray = out.mean(axis=2, keepdims=True)
    out = (out - gray) * (1 + saturation) + gray
    params = {"flip": flip, "crop_xywh": [x0, y0, crop_w, crop_h], "brightness": round(brightness, 4),
              "contrast": round(contrast, 4), "saturation": round(saturation, 4)}
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), params


# --------------------------------------------------------------------------- operators


class BackgroundFrames:
    """CPU step: choose each background row's keyframe, decode it at work size, build its mask.

    Fills ``frame``, ``mask`` (PNG, work size) and ``frames.FRAMES`` (the keyframe), so the
    inpainting actor after it never waits on FFmpeg.
    """

    def __init__(self, config: BackgroundConfig, multiple: int = 16):
        self.config, self.multiple = config, multiple

    def __call__(self, batch: pa.Table) -> pa.Table:
        return run_isolated(batch, self._prepare)

    def _prepare(self, live: pa.Table) -> pa.Table:
        import cv2

        rows = live.to_pylist()
        frames, masks, keyframes = [None] * len(rows), [None] * len(rows), [None] * len(rows)
        for i, row in enumerate(rows):
            if row["kind"] != BACKGROUND:
                continue
            subjects = row[SUBJECTS] or []
            start, end = int(row["start_frame"]), int(row["end_frame"])
            keyframe = choose_keyframe(subjects, start, end)
            width, height = int(row["width"]), int(row["height"])
            size = work_size(width, height, self.config.max_side, self.multiple)
            # By frame number, as stages 2-3 record it: no time arithmetic, so right on VFR too.
            clip = read_clip_frames(row["uri"], start, end, float(row["start_s"]), float(row["end_s"]),
                                    at_frames([keyframe], size=size))
            mask = subject_mask(width, height, subjects, keyframe, self.config.face_margin)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
            masks[i] = encode_png(dilate(mask, self.config.dilation))
            frames[i], keyframes[i] = encode_frames(clip), int(clip.indices[0])
        live = put_column(live, "frame", pa.array(keyframes, pa.int64()))
        live = put_column(live, "mask", pa.array(masks, pa.binary()))
        return put_column(live, FRAMES, pa.array(frames, pa.binary()))


class Backgrounds:
    """Inpainting step (GPU actor with the model backend): keyframe + mask -> augmented I^Bg."""

    def __init__(self, config: BackgroundConfig, models: Any = None, device: str | None = None):
        self.config = config
        self.pipe = load("inpainter", models, device=device) if config.backend == "model" else None
        self.model_name = resolve("inpainter", models) if self.pipe is not None else OPENCV

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = run_isolated(batch, self._fill)
        return drop_frames(out)

    def _fill(self, live: pa.Table) -> pa.Table:
        rows = live.to_pylist()
        for row in rows:
            if row["kind"] != BACKGROUND:
                continue
            image = decode_frames(row[FRAMES]).images[0]
            mask = decode_png(row["mask"], "L")
            seed = seed_for(self.config.seed, BACKGROUND, row["source_id"])
            masked = float((mask > 0).mean())
            params = {"backend": self.config.backend, "masked": round(masked, 4),
                      "width": image.shape[1], "height": image.shape[0]}
            row.update(seed=seed, model=self.model_name)
            if masked > self.config.max_masked:
                row.update(status=TOO_MASKED, image=None, params=json.dumps(params, sort_keys=True))
                continue
            if self.pipe is not None:
                params.update(steps=self.config.steps, guidance=self.config.guidance, strength=self.config.strength)
                row["prompt"] = self.config.prompt
            background, drawn = augment(remove_subjects(image, mask, self.config, self.pipe, seed), seed, self.config)
            row.update(image=encode_png(background), params=json.dumps({**params, "augment": drawn}, sort_keys=True))
        return fill_columns(live, rows, {**OUTPUT_COLUMNS, "status": pa.string()})

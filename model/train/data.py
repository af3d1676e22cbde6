"""The samples table (Eq. 19 records) as MAGREF training examples.

One example = one clip of a ``samples`` row, decoded at the training frame rate into
``4k + 1`` frames at one of a few size buckets, plus the canvas the model conditions on
(Eq. 1-2, 5), the prompt and the subject words bound to their references (Eq. 6).

Every random choice of an example (caption dropout, which of an identity's ranked face
crops, reference or variant per subject, background or not, the canvas shuffle, the
temporal window) is drawn from one rng seeded
by ``(seed, sample_id, augmentation)``, never from global state. So the same
``(sample_id, augmentation)`` is the same example in any process, on any rank, after a
resume, and in the latent cache (which is keyed by exactly that pair).

A record that cannot become an example (missing or broken video, an unreadable PNG, a
range too short, a Parquet part with the wrong schema) raises ``BadRecord`` with the
reason and the sample id; the loader counts it and moves on, so one bad record never
ends an epoch.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

from curation.decode import open_video, stream_fps
from curation.frames import TIME_EPS, at_times, read_clip_frames
from curation.images import IMAGE_ERRORS, read_image
from model.conditioning import MAX_REFERENCES, Canvas, check_video_size, compose_canvas
from model.disentangle import SubjectGuidance, SubjectWordError, word_spans
from schemas.samples import sample_references

if TYPE_CHECKING:  # the reader imports BadRecord from here
    from model.train.samples_reader import SamplesTable

# Wan2.1-480P's three shapes: landscape, portrait, square (each side a multiple of 16).
DEFAULT_BUCKETS: tuple[tuple[int, int], ...] = ((832, 480), (480, 832), (624, 624))
# What the target's frame 0 is: the canvas (as the release was trained: its sampler drops
# the first 4 frames because they echo the canvas) or the clip's own first frame.
FIRST_FRAMES = ("canvas", "clip")


class BadRecord(Exception):
    """A samples row that cannot be trained on; ``reason`` is the counter it goes to."""

    def __init__(self, reason: str, sample_id: str, message: str) -> None:
        self.reason, self.sample_id = reason, sample_id
        super().__init__(f"sample {sample_id}: {message}")


@dataclass(frozen=True)
class DataConfig:
    """How a samples row becomes an example. Defaults: Wan2.1 480P at 16 fps, 81 frames."""

    fps: float = 16.0                 # training frame rate (Wan2.1 trains at 16 fps)
    num_frames: int = 81              # frames per example, 4k+1; shorter clips take the largest 4k+1 they hold
    min_frames: int = 17              # clips with fewer frames at ``fps`` are skipped (reason too_short)
    buckets: tuple[tuple[int, int], ...] = DEFAULT_BUCKETS  # (width, height); nearest aspect wins
    variant_prob: float = 0.5         # per subject: the generated variant I' instead of the ref (B.4)
    background_prob: float = 0.5      # include the background reference when the row has one
    shuffle_refs: bool = True         # random canvas cells (the paper's anti-positional-bias shuffle)
    caption_dropout: float = 0.0      # train the text-free branch CFG uses; 0 keeps Wan's as is
    augmentations: int | None = None  # None: a fresh augmentation every epoch; N: cycle N (a cache holds N)
    seed: int = 0                     # seeds every choice of an example, with its sample id and augmentation
    first_frame: str = "canvas"       # the target's frame 0: "canvas" (the release) or "clip"

    def __post_init__(self) -> None:
        if self.first_frame not in FIRST_FRAMES:
            raise ValueError(f"first_frame={self.first_frame!r} must be one of {', '.join(FIRST_FRAMES)}")
        check_video_size(16, 16, self.num_frames)
        if self.min_frames < 1 or self.min_frames > self.num_frames:
            raise ValueError(f"min_frames={self.min_frames} must be in [1, num_frames={self.num_frames}]")
        for width, height in self.buckets:
            check_video_size(height, width)
        for name in ("variant_prob", "background_prob", "caption_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be a probability in [0, 1]")
        if self.augmentations is not None and self.augmentations < 1:
            raise ValueError(f"augmentations={self.augmentations} must be >= 1 (or None)")
        if self.fps <= 0:
            raise ValueError(f"fps={self.fps} must be positive")

    def augmentation(self, epoch: int) -> int:
        """The augmentation seed an epoch uses: the epoch itself, or cycled over a cache's N."""
        return epoch if self.augmentations is None else epoch % self.augmentations


@dataclass
class Example:
    """One training example before any model sees it (uint8 frames, PIL canvas)."""

    sample_id: str
    augmentation: int
    frames: np.ndarray                     # uint8 [F, H, W, 3]: the target (frame 0 the canvas by default)
    canvas: Canvas                         # Eq. 1, 2, 5 at the clip's size
    prompt: str                            # the caption, or "" when dropped
    subjects: list[tuple[str, int]] = field(default_factory=list)  # (word, reference index)
    guidance: SubjectGuidance | None = None  # Eq. 6 inputs, when there are subjects

    @property
    def bucket(self) -> tuple[int, int, int]:
        """(width, height, frames): examples batch together only within one bucket."""
        f, h, w, _ = self.frames.shape
        return w, h, f


def example_rng(seed: int, sample_id: str, augmentation: int) -> np.random.Generator:
    digest = int.from_bytes(hashlib.blake2b(sample_id.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng([seed, digest, augmentation])


def face_choice(seed: int, sample_id: str, face: int, augmentation: int, count: int) -> int:
    """Which of a face reference's ``count`` ranked crops augmentation ``augmentation`` uses.

    A seeded start per (seed, sample, face), then one crop further each augmentation: two
    epochs in a row never show the same pose when there are two or more, and ``count``
    epochs show every one (a latent cache of N augmentations holds at most N of them).
    """
    key = f"{seed}:{sample_id}:{face}".encode()
    start = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    return (start + augmentation) % count


def nearest_bucket(width: int, height: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest (in log space, so 2:1 and 1:2 are equally far)."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - aspect))


def cover_size(width: int, height: int, bucket: tuple[int, int]) -> tuple[int, int]:
    """Smallest (w, h) with the source's aspect that covers ``bucket``; even, as swscale wants."""
    scale = max(bucket[0] / width, bucket[1] / height)
    w = max(bucket[0], int(math.ceil(width * scale)))
    h = max(bucket[1], int(math.ceil(height * scale)))
    return w + w % 2, h + h % 2


def frame_count(num_source: int, source_fps: float, fps: float, wanted: int) -> int:
    """The largest 4k+1 <= ``wanted`` frames that ``num_source`` frames hold at ``fps``."""
    available = int(math.floor((num_source - 1) * fps / source_fps + 1e-6)) + 1 if num_source else 0
    count = min(wanted, available)
    return (count - 1) // 4 * 4 + 1 if count >= 1 else 0


def window_times(num_source: int, source_fps: float, fps: float, count: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Seconds from the clip's start of ``count`` frames at ``fps``; the window start is drawn.

    The window slides (seeded) over the clip when the clip is longer than the window; on a
    constant-rate source the frame shown at time tau is floor(tau * source_fps), so a slower
    source repeats frames and a faster one skips them.
    """
    span = (count - 1) / fps                             # seconds from first to last frame
    slack = (num_source - 1) / source_fps - span         # how far the window can slide
    offset = float(rng.uniform(0.0, slack)) if slack > 1e-9 else 0.0
    return offset + np.arange(count) / fps


def read_clip(uri: str, start: int, end: int, fps: float | None, config: DataConfig,
              rng: np.random.Generator, sample_id: str, start_s: float | None = None,
              end_s: float | None = None, crop: Sequence[float] | None = None) -> np.ndarray:
    """uint8 [F, H, W, 3]: the clip at ``config.fps``, covered and centre-cropped to its bucket.

    ``crop`` (x, y, w, h in source pixels, the row's ``crop``) is the part of the frame that
    is the clip (imported datasets cut watermarks off this way): the bucket is chosen for
    it and only it is kept, so imported and curated samples train alike.

    Frames are chosen by presentation time (``curation.frames.at_times``): frame i is the one
    on screen at ``start + offset + i / fps``. The clip's start and end in seconds are the
    row's ``start_s``/``end_s`` (the decoder's pts, right on variable-frame-rate video); rows
    without them fall back to ``start_frame / fps`` (exact on constant-rate video only).
    """
    source_fps = fps or _stream_fps(uri, sample_id)
    count = frame_count(end - start, source_fps, config.fps, config.num_frames)
    if count < config.min_frames:
        raise BadRecord("too_short", sample_id,
                        f"frames [{start}, {end}) of {uri!r} give {count} frames at {config.fps} fps, "
                        f"fewer than min_frames={config.min_frames}")
    start_s = start / source_fps if start_s is None else float(start_s)
    end_s = end / source_fps if end_s is None else float(end_s)
    times = start_s + window_times(end - start, source_fps, config.fps, count, rng)
    bucket: list[tuple[int, int]] = []
    region: list[tuple[float, float, float, float]] = []  # the crop in decoded pixels

    def size(width: int, height: int) -> tuple[int, int]:
        x, y, w, h = _crop_box(crop, width, height, sample_id)
        bucket.append(nearest_bucket(round(w), round(h), config.buckets))
        cover_w, cover_h = cover_size(round(w), round(h), bucket[0])
        sx, sy = cover_w / w, cover_h / h  # decode the whole frame at the scale that covers the crop
        region.append((x * sx, y * sy, cover_w, cover_h))
        return max(cover_w, round(width * sx)), max(cover_h, round(height * sy))

    try:
        clip = read_clip_frames(uri, start, end, start_s, end_s, at_times(np.minimum(times, end_s - TIME_EPS),
                                                                              size=size))
    except BadRecord:
        raise
    except FileNotFoundError as exc:
        raise BadRecord("missing_video", sample_id, f"video {uri!r} does not exist ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - any demux/decoder failure is this record's problem
        raise BadRecord("unreadable_video", sample_id, f"cannot decode clip [{start}, {end}) of "
                        f"{uri!r}: {exc}") from exc
    # at_times returns each distinct frame once; a slower source shows one frame at several times.
    which = np.searchsorted(clip.times, times + TIME_EPS, side="right") - 1
    frames = clip.images[np.clip(which, 0, len(clip) - 1)]
    (bw, bh), (w, h) = bucket[0], (frames.shape[2], frames.shape[1])
    rx, ry, rw, rh = region[0]
    x0 = min(max(0, round(rx + (rw - bw) / 2)), w - bw)
    y0 = min(max(0, round(ry + (rh - bh) / 2)), h - bh)
    return np.ascontiguousarray(frames[:, y0:y0 + bh, x0:x0 + bw])


def _crop_box(crop: Sequence[float] | None, width: int, height: int, sample_id: str
              ) -> tuple[float, float, float, float]:
    """The row's crop as (x, y, w, h) inside a ``width`` x ``height`` frame (the whole frame if None)."""
    if crop is None:
        return 0.0, 0.0, float(width), float(height)
    x, y, w, h = (float(v) for v in crop)
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > width + 0.5 or y + h > height + 0.5:
        raise BadRecord("bad_crop", sample_id, f"crop {list(crop)} (x, y, w, h) does not fit the "
                        f"{width}x{height} frame")
    return x, y, w, h


def _stream_fps(uri: str, sample_id: str) -> float:
    """The stream's frame rate, for rows whose ``fps`` is null."""
    try:
        with open_video(uri) as (_, stream):
            return stream_fps(stream)
    except FileNotFoundError as exc:
        raise BadRecord("missing_video", sample_id, f"video {uri!r} does not exist ({exc})") from exc
    except Exception as exc:  # noqa: BLE001
        raise BadRecord("unreadable_video", sample_id, f"cannot open video {uri!r}: {exc}") from exc


def _png(data: bytes, sample_id: str, what: str) -> Image.Image:
    try:
        return read_image(data)
    except IMAGE_ERRORS as exc:
        raise BadRecord("unreadable_image", sample_id, f"cannot read the {what} PNG: {exc}") from exc


def make_example(row: dict[str, Any], augmentation: int, config: DataConfig,
                 tokenizer: Any = None) -> Example:
    """Turn one samples row into an example; ``BadRecord`` when it cannot be."""
    sample_id = str(row.get("sample_id"))
    start, end = int(row["start_frame"]), int(row["end_frame"])
    if end <= start or start < 0:
        raise BadRecord("bad_range", sample_id, f"frame range [{start}, {end}) is empty")
    rng = example_rng(config.seed, sample_id, augmentation)
    drop_caption = bool(rng.random() < config.caption_dropout)
    refs = sample_references(row, lambda: bool(rng.random() < config.variant_prob),
                             lambda face, count: face_choice(config.seed, sample_id, face, augmentation, count))
    if refs and refs[-1].kind == "background" and not rng.random() < config.background_prob:
        refs = refs[:-1]
    if not refs:
        raise BadRecord("no_references", sample_id, "no face, object or background reference")
    if len(refs) > MAX_REFERENCES:  # keep a random 8, in canvas order
        keep = np.sort(rng.choice(len(refs), MAX_REFERENCES, replace=False))
        refs = [refs[i] for i in keep]
    images = [_png(r.image, sample_id, f"{r.kind} reference {i}") for i, r in enumerate(refs)]
    canvas_rng = np.random.default_rng(rng.integers(1 << 62)) if config.shuffle_refs else None
    frames = read_clip(row["uri"], start, end, row.get("fps"), config, rng, sample_id,
                       row.get("start_s"), row.get("end_s"), row.get("crop"))
    height, width = frames.shape[1:3]
    canvas = compose_canvas(images, height, width, rng=canvas_rng)
    if config.first_frame == "canvas":
        frames[0] = np.asarray(canvas.image.convert("RGB"))  # as Wan I2V: latent frame 0 = condition's
    prompt = "" if drop_caption else (row.get("caption") or "")
    subjects = [] if drop_caption else [
        (r.word, i) for i, r in enumerate(refs) if r.word and word_spans(prompt, r.word)]
    example = Example(sample_id, augmentation, frames, canvas, prompt, subjects)
    return attach_guidance(example, tokenizer) if tokenizer is not None else example


def attach_guidance(example: Example, tokenizer: Any) -> Example:
    """Map the subject words to token positions (Eq. 6 inputs); needs the text tokenizer."""
    if example.subjects:
        try:
            example.guidance = SubjectGuidance.build(tokenizer, example.prompt, example.subjects,
                                                     example.canvas.subject_masks)
        except SubjectWordError as exc:  # e.g. a word truncated away by the 512-token limit
            raise BadRecord("subject_word", example.sample_id, str(exc)) from exc
    return example


def example_bytes(example: Example) -> bytes:
    """An example (without guidance, which the tokenizer's holder adds) as one npz blob.

    How examples travel from the CPU decode step to the encoder step of the cache job.
    """
    import json

    buf = io.BytesIO()
    meta = {"sample_id": example.sample_id, "augmentation": example.augmentation,
            "prompt": example.prompt, "subjects": example.subjects, "boxes": example.canvas.boxes}
    np.savez(buf, frames=example.frames, canvas=np.asarray(example.canvas.image),
             region_mask=example.canvas.region_mask, subject_masks=example.canvas.subject_masks,
             meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    return buf.getvalue()


def example_from_bytes(blob: bytes) -> Example:
    import json

    with np.load(io.BytesIO(blob)) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        canvas = Canvas(Image.fromarray(data["canvas"]), data["region_mask"], data["subject_masks"],
                        [tuple(b) for b in meta["boxes"]])
        return Example(meta["sample_id"], meta["augmentation"], data["frames"], canvas,
                       meta["prompt"], [tuple(s) for s in meta["subjects"]])


class SamplesDataset:
    """Index → example for a samples table; the loader (``model.train.batching``) drives it.

    ``load`` runs in the loader's threads; a fast tokenizer's backend must not be entered by
    two threads at once ("Already borrowed"), so guidance is built under a lock (it is fast).
    """

    def __init__(self, table: "SamplesTable", config: DataConfig, tokenizer: Any = None) -> None:
        import threading

        self.table, self.config, self.tokenizer = table, config, tokenizer
        self._tokenizer_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.table)

    def sample_id(self, index: int) -> str:
        return self.table.sample_id(index)

    def epoch_order(self, seed: int, epoch: int, rank: int, world: int) -> np.ndarray | None:
        """The table's order: by row group, then rows in a bounded buffer (``samples_reader``)."""
        return self.table.epoch_order(seed, epoch, rank, world)

    def load(self, index: int, augmentation: int) -> Example:
        example = make_example(self.table.row(index), augmentation, self.config)
        if self.tokenizer is None:
            return example
        with self._tokenizer_lock:
            return attach_guidance(example, self.tokenizer)

"""Clip frames, one contract: which frames a step looks at, one reader, one column.

Every per-clip step (captions, grounding, faces, backgrounds, training data) needs a few
frames of a clip at some size. This module is the only place that decides

* **which frames** (``FrameRequest``): ``uniform(k)`` evenly spaced frames of the clip,
  ``every(seconds)`` one frame per period, ``at_times([...])`` the frames on screen at
  given times, ``at_frames([...])`` given frame numbers of the clip (for a frame another
  stage recorded by number, e.g. a background's keyframe). Time-based policies choose by *presentation time* (the last frame whose
  pts is <= the asked time: the one a viewer sees then), never by counting frames at a
  nominal rate, so they stay right on variable-frame-rate video;
* **how they are read** (``read_clip_frames`` / ``read_range_frames``): one seek to the
  keyframe before the clip, one decode pass to its last wanted frame, conversion (and
  scaling, in swscale) of the chosen frames only;
* **how they travel** between a CPU decode step and a GPU step in a Ray pipeline: in the
  private column ``FRAMES``, encoded by ``encode_frames`` / ``decode_frames``.

Frame numbers and seconds: a clip row's ``start_frame`` is the frame's position in
decode (presentation) order from the start of the stream, and ``start_s`` its pts in
seconds from the stream's start. The reader seeks by ``start_s`` and counts from there,
so the two must agree (stage 1 writes them from the decoder's own pts).

``FrameReader`` is the CPU operator that fills ``FRAMES`` for live clip rows, so GPU
actors after it never wait on FFmpeg (Ray's batch-inference pattern).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Mapping, Sequence, Union

import av
import numpy as np
import pyarrow as pa

from curation.decode import IncompleteVideoError, open_video, stream_fps, target_size
from curation.envelope import apply_to_live, put_column, settle_failures
from schemas.tables import INPUT

FRAMES = "_frames"  # the private column: npz bytes, see encode_frames
DEFAULT_SET = "frames"
UNIFORM, EVERY, TIMES, NUMBERS = "uniform", "every", "times", "numbers"
# Two timestamps closer than this are the same instant (float rounding of pts * time_base).
TIME_EPS = 1e-4

Size = Union[tuple[int, int], Callable[[int, int], tuple[int, int]], None]


@dataclass(frozen=True)
class FrameRequest:
    """Which frames of a clip, and at what size.

    ``size`` is a fixed ``(width, height)``, or a function of the source's ``(width,
    height)`` returning one (e.g. Qwen2.5-VL's multiple-of-28 resize), or ``None`` with
    ``short_side`` (scale so the short side is that many pixels) or neither (source size).
    """

    policy: str
    count: int = 0
    seconds: float = 0.0
    times: tuple[float, ...] = ()
    numbers: tuple[int, ...] = ()
    size: Size = None
    short_side: int | None = None
    format: str = "rgb24"  # any PyAV format; "gray" gives (H, W) images
    interpolation: str | None = None  # swscale's, e.g. "BICUBIC", "AREA"; None: its default

    def __post_init__(self) -> None:
        if self.policy == UNIFORM and self.count < 1:
            raise ValueError(f"uniform frames need count >= 1, got {self.count}")
        if self.policy == EVERY and self.seconds <= 0:
            raise ValueError(f"every-n-seconds frames need seconds > 0, got {self.seconds}")
        if self.policy == TIMES and not self.times:
            raise ValueError("at_times needs at least one time")
        if self.policy == NUMBERS and not self.numbers:
            raise ValueError("at_frames needs at least one frame number")
        if self.policy not in (UNIFORM, EVERY, TIMES, NUMBERS):
            raise ValueError(f"unknown frame policy {self.policy!r}; use uniform, every, times or numbers")

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        if callable(self.size):
            return self.size(width, height)
        if self.size is not None:
            return self.size
        return target_size(width, height, self.short_side)


def uniform(count: int, **output: Any) -> FrameRequest:
    """``count`` frames evenly spaced over the clip, first and last frame included."""
    return FrameRequest(UNIFORM, count=count, **output)


def every(seconds: float, **output: Any) -> FrameRequest:
    """The frame on screen at the clip's start and every ``seconds`` after it."""
    return FrameRequest(EVERY, seconds=seconds, **output)


def at_times(times: Sequence[float], **output: Any) -> FrameRequest:
    """The frames on screen at these times (seconds from the stream's start)."""
    return FrameRequest(TIMES, times=tuple(sorted(float(t) for t in times)), **output)


def at_frames(numbers: Sequence[int], **output: Any) -> FrameRequest:
    """These frames of a clip, by frame number: exact on any frame rate, no time arithmetic."""
    return FrameRequest(NUMBERS, numbers=tuple(sorted({int(n) for n in numbers})), **output)


@dataclass
class ClipFrames:
    """Chosen frames of one clip, in time order, one entry per distinct frame."""

    images: np.ndarray  # (N, H, W, 3) uint8, or (N, H, W) for "gray"
    indices: np.ndarray  # (N,) int64: frame numbers in the video
    times: np.ndarray  # (N,) float64: pts in seconds from the stream's start

    def __len__(self) -> int:
        return len(self.indices)


# ---------------------------------------------------------------------------
# Choosing frames while they stream past: the one rule every reader uses.
# ---------------------------------------------------------------------------

@dataclass
class Selector:
    """Decide frame by frame, one frame late, which frames a request chooses.

    Frame-number targets (``uniform``) are exact; time targets choose the last frame whose
    pts is <= the target, which is only known when the *next* frame (or the end) arrives:
    ``offer`` returns the frames whose turn has come, ``finish`` the rest.
    """

    numbers: list[int] = field(default_factory=list)  # sorted frame numbers wanted
    times: list[float] = field(default_factory=list)  # sorted times wanted
    _held: Any = None

    @classmethod
    def for_clip(cls, request: FrameRequest, start_frame: int, end_frame: int,
                 start_s: float, end_s: float) -> "Selector":
        if end_frame <= start_frame:
            raise ValueError(f"empty frame range [{start_frame}, {end_frame})")
        if request.policy == UNIFORM:
            spots = np.linspace(start_frame, end_frame - 1, request.count)
            return cls(numbers=sorted(set(int(round(x)) for x in spots)))
        if request.policy == NUMBERS:
            outside = [n for n in request.numbers if not start_frame <= n < end_frame]
            if outside:
                raise ValueError(f"asked for frames {outside[:3]} outside the clip [{start_frame}, {end_frame})")
            return cls(numbers=list(request.numbers))
        return cls(times=_time_targets(request, start_s, end_s))

    def offer(self, item: Any, number: int, seconds: float) -> list[Any]:
        """Give the next frame (any payload, its number and pts); get back chosen payloads."""
        chosen = []
        if self.numbers:
            while self.numbers and self.numbers[0] < number:
                self.numbers.pop(0)  # never reached exactly (a gap in numbering): skip it
            if self.numbers and self.numbers[0] == number:
                self.numbers.pop(0)
                chosen.append(item)
            return chosen
        held = self._held
        if held is not None and self.times and seconds > self.times[0] + TIME_EPS:
            chosen.append(held[0])
            while self.times and self.times[0] + TIME_EPS < seconds:
                self.times.pop(0)
        self._held = (item, seconds) if self.times else None
        return chosen

    def finish(self) -> list[Any]:
        """At the end of the range: the held frame if a time target still waits for it."""
        held, self._held = self._held, None
        if held is not None and self.times:
            self.times.clear()
            return [held[0]]
        return []

    @property
    def done(self) -> bool:
        return not self.numbers and not self.times and self._held is None


def _time_targets(request: FrameRequest, start_s: float, end_s: float) -> list[float]:
    if request.policy == NUMBERS:
        raise ValueError("at_frames needs a clip's frame numbers: use read_clip_frames, or at_times for a time range")
    if request.policy == EVERY:
        count = int(np.floor((end_s - start_s - TIME_EPS) / request.seconds)) + 1
        return [start_s + k * request.seconds for k in range(max(count, 1))]
    if request.policy == UNIFORM:  # a time range without frame numbers: even in time
        return list(np.linspace(start_s, max(start_s, end_s - TIME_EPS), request.count))
    outside = [t for t in request.times if not start_s - TIME_EPS <= t < end_s]
    if outside:
        raise ValueError(f"asked for times {outside[:3]} outside the range [{start_s:.3f}, {end_s:.3f}) s")
    return list(request.times)


# ---------------------------------------------------------------------------
# The reader: one seek, one decode pass.
# ---------------------------------------------------------------------------

def frame_seconds(frame: av.VideoFrame, stream: Any) -> float | None:
    """A frame's pts in seconds from the stream's start (None if the container gives none)."""
    pts = frame.pts if frame.pts is not None else frame.dts
    if pts is None or stream.time_base is None:
        return None
    return float((pts - (stream.start_time or 0)) * stream.time_base)


def _window(uri: str, start_s: float, end_s: float, strict: bool) -> Generator[tuple[av.VideoFrame, float, Any], None, None]:
    """Decoded frames with pts in [start_s, end_s), after one backward seek to ``start_s``."""
    with open_video(uri, strict=strict) as (container, stream):
        period = 1.0 / stream_fps(stream)
        if start_s > TIME_EPS:
            offset = start_s / float(stream.time_base) + (stream.start_time or 0)
            container.seek(int(offset), stream=stream, backward=True)
        previous = None
        try:
            for frame in container.decode(stream):
                seconds = frame_seconds(frame, stream)
                if seconds is None:  # no timestamps at all: assume the nominal rate
                    seconds = 0.0 if previous is None else previous + period
                previous = seconds
                if seconds < start_s - TIME_EPS:
                    continue
                if seconds >= end_s - TIME_EPS:
                    return
                yield frame, seconds, stream
        except av.error.FFmpegError as err:
            at = f"{previous:.3f} s" if previous is not None else "the start"
            raise IncompleteVideoError(f"{uri}: decoding failed after {at} ({type(err).__name__}: {err})") from err


def read_clip_frames(uri: str, start_frame: int, end_frame: int, start_s: float, end_s: float,
                     request: FrameRequest, strict: bool = True) -> ClipFrames:
    """The frames ``request`` chooses in clip ``[start_frame, end_frame)`` (``start_s``/``end_s``: their pts).

    Raises ``IncompleteVideoError`` naming the file when a chosen frame does not decode.
    """
    selector = Selector.for_clip(request, start_frame, end_frame, start_s, end_s)
    wanted = len(selector.numbers) or len(selector.times)
    return _collect(uri, _window(uri, start_s, end_s, strict), selector, request, wanted,
                    first_number=start_frame, last_number=end_frame)


def read_range_frames(uri: str, start_s: float, end_s: float, request: FrameRequest,
                      fps: float | None = None, strict: bool = True) -> ClipFrames:
    """Frames of a time range that is not a clip (e.g. stage 3's neighbour margins).

    A time target before the range's first frame gets that first frame. Without a known first frame number, ``uniform`` spreads evenly in time and the
    returned ``indices`` are ``round(pts * fps)``: exact on constant-frame-rate video only.
    """
    if end_s <= start_s:
        raise ValueError(f"empty time range [{start_s}, {end_s})")
    selector = Selector(times=_time_targets(request, start_s, end_s))
    return _collect(uri, _window(uri, start_s, end_s, strict), selector, request, len(selector.times),
                    fps=fps)


def _collect(uri: str, frames: Generator, selector: Selector, request: FrameRequest, wanted: int,
             first_number: int | None = None, last_number: int | None = None,
             fps: float | None = None) -> ClipFrames:
    images: list[np.ndarray] = []
    numbers: list[int] = []
    times: list[float] = []
    out_size: tuple[int, int] | None = None

    def take(chosen: list[tuple[av.VideoFrame, int, float]]) -> None:
        nonlocal out_size
        for frame, number, seconds in chosen:
            if out_size is None:
                out_size = request.output_size(frame.width, frame.height)
            width, height = out_size
            images.append(frame.to_ndarray(width=width, height=height, format=request.format,
                                           interpolation=request.interpolation))
            numbers.append(number)
            times.append(seconds)

    rate = fps
    try:
        for ordinal, (frame, seconds, stream) in enumerate(frames):
            if rate is None:
                rate = stream_fps(stream)
            number = first_number + ordinal if first_number is not None else int(round(seconds * rate))
            if last_number is not None and number >= last_number:
                break
            take(selector.offer((frame, number, seconds), number, seconds))
            if not selector.numbers and not selector.times:
                break
    finally:
        frames.close()  # closes the container now, not whenever the generator is collected
    take(selector.finish())
    if len(numbers) < wanted and (selector.numbers or selector.times):
        missing = selector.numbers[:3] or [round(t, 3) for t in selector.times[:3]]
        raise IncompleteVideoError(f"{uri}: frames {missing} of the clip did not decode (the stream ended)")
    if not numbers:
        raise IncompleteVideoError(f"{uri}: no frame decodes in the requested range")
    return ClipFrames(np.stack(images), np.asarray(numbers, np.int64), np.asarray(times, np.float64))


# ---------------------------------------------------------------------------
# The column: how frames travel between steps.
# ---------------------------------------------------------------------------

def drop_frames(table: pa.Table) -> pa.Table:
    """The table without the ``FRAMES`` column: a GPU step's output never carries pixels on."""
    return table.drop_columns([FRAMES]) if FRAMES in table.column_names else table


def encode_frames(frames: ClipFrames | Mapping[str, ClipFrames], jpeg_quality: int | None = None) -> bytes:
    """Frames (or named sets of frames) as one npz blob for the ``FRAMES`` column.

    Uncompressed by default (exact pixels). ``jpeg_quality`` stores each image as a JPEG
    instead, ~10-30x smaller: for frames that wait in a Ray block for a model that does not
    need exact pixels (stage 1 packs every clip of a video in one block, so an hour of
    video would otherwise carry hundreds of MB of raw frames).
    """
    sets = {DEFAULT_SET: frames} if isinstance(frames, ClipFrames) else dict(frames)
    arrays: dict[str, np.ndarray] = {}
    for name, item in sets.items():
        if "." in name:
            raise ValueError(f"frame set name {name!r} must not contain '.'")
        if jpeg_quality is None:
            arrays[f"{name}.images"] = item.images
        else:
            encoded = [_jpeg(image, jpeg_quality) for image in item.images]
            arrays[f"{name}.jpeg"] = np.concatenate(encoded) if encoded else np.zeros(0, np.uint8)
            arrays[f"{name}.jpeg_sizes"] = np.asarray([len(e) for e in encoded], np.int64)
        arrays[f"{name}.indices"] = np.asarray(item.indices, np.int64)
        arrays[f"{name}.times"] = np.asarray(item.times, np.float64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return data.ravel()


def _images(arrays: Any, name: str) -> np.ndarray:
    if f"{name}.images" in arrays.files:
        return arrays[f"{name}.images"]
    import cv2

    data, sizes = arrays[f"{name}.jpeg"], arrays[f"{name}.jpeg_sizes"]
    images = []
    for chunk in np.split(data, np.cumsum(sizes)[:-1]) if len(sizes) else []:
        image = cv2.imdecode(chunk, cv2.IMREAD_UNCHANGED)
        images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image)
    return np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)


def decode_frame_sets(blob: bytes) -> dict[str, ClipFrames]:
    """Every named set in a ``FRAMES`` blob (JPEG-stored sets come back as arrays)."""
    with np.load(io.BytesIO(blob)) as arrays:
        names = sorted({key.split(".", 1)[0] for key in arrays.files})
        return {name: ClipFrames(_images(arrays, name), arrays[f"{name}.indices"], arrays[f"{name}.times"])
                for name in names}


def decode_frames(blob: bytes, name: str = DEFAULT_SET) -> ClipFrames:
    """One set of a ``FRAMES`` blob (the default set unless named)."""
    sets = decode_frame_sets(blob)
    if name not in sets:
        raise KeyError(f"no frame set {name!r} in the frames column (found {', '.join(sets) or 'none'})")
    return sets[name]


# ---------------------------------------------------------------------------
# The CPU operator in front of a GPU step.
# ---------------------------------------------------------------------------

CLIP_COLUMNS = ("uri", "start_frame", "end_frame", "start_s", "end_s")


class FrameReader:
    """Decode the requested frames of every live clip row into the ``FRAMES`` column.

    Stateless (no model), so it runs as Ray tasks on CPUs; a clip whose frames do not
    decode settles its whole input as one error row, the other rows go on.
    """

    def __init__(self, request: FrameRequest, strict: bool = True, schema: pa.Schema | None = None):
        self.request, self.strict, self.schema = request, strict, schema

    def __call__(self, batch: pa.Table) -> pa.Table:
        failed: dict[str, BaseException] = {}
        result = apply_to_live(batch, lambda live: self._read(live, failed))
        return settle_failures(result, failed, self.schema)

    def _read(self, live: pa.Table, failed: dict[str, BaseException]) -> pa.Table:
        missing = [c for c in CLIP_COLUMNS if c not in live.column_names]
        if missing:
            raise KeyError(f"FrameReader needs clip columns {missing}; the stage must read them")
        blobs: list[bytes | None] = []
        for row in live.select([INPUT, *CLIP_COLUMNS]).to_pylist():
            try:
                frames = read_clip_frames(row["uri"], int(row["start_frame"]), int(row["end_frame"]),
                                          float(row["start_s"]), float(row["end_s"]), self.request, self.strict)
                blobs.append(encode_frames(frames))
            except Exception as exc:  # noqa: BLE001 - one clip's failure settles only its input
                failed.setdefault(row[INPUT], exc)
                blobs.append(None)
        return put_column(live, FRAMES, pa.array(blobs, pa.binary()))

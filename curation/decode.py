"""Decoding frames with PyAV: a frame range at a target fps and size, threaded, with seeks.

Kept apart from ``curation/video.py`` (the stage 0 probe) so each module reads whole.
Two access patterns matter for throughput:

* ``iter_frames`` walks a range once, in order. Stage 1's scan uses it on the whole
  video, so a video is decoded once for scenes, motion and aesthetics together.
* ``prefetched`` runs a frame iterator in a thread ahead of a consumer that does
  per-frame work (the scan), so decoding and that work overlap.
* ``read_frames`` fetches chosen frames of a clip (the captioner's samples), seeking to
  the keyframe before the range instead of decoding from the start of the video.

Scaling happens in the decode path: ``VideoFrame.reformat`` hands the YUV frame to
swscale, which converts and scales in one pass, so a 720p frame never exists as a
full-size RGB array when a 256 px one is asked for.

Strictness: FFmpeg decoders conceal corrupt data and demuxers stop quietly at
garbage. Training data should not hold concealed garbage, so by default a decode
error aborts (``err_detect=explode``) and a stream that ends well before the frame
count its header promised raises ``IncompleteVideoError``.
"""

from __future__ import annotations

import math
import queue
import threading
from contextlib import contextmanager
from fractions import Fraction
from typing import Iterator, Sequence, TypeVar

import av
import numpy as np

from curation.sources import open_binary

# Decoding may fall this far short of the header's frame count before we call the
# file broken (headers round durations; some muxers count an extra frame or two).
FRAME_COUNT_TOLERANCE = 0.02


T = TypeVar("T")


class IncompleteVideoError(RuntimeError):
    """A video whose frames stop, or fail to decode, before its header says they end."""


def open_container(uri: str) -> av.container.InputContainer:
    """Open ``uri`` (local path or pyarrow URI) for reading: the one place videos are opened.

    Container and stream metadata are decoded with replacement: real footage (QuickTime
    writers) carries handler names in legacy code pages, and PyAV's strict default turns
    such a valid file into a ``UnicodeDecodeError`` before any frame is read.
    """
    source = uri if "://" not in uri else open_binary(uri)
    return av.open(source, mode="r", metadata_errors="replace")


@contextmanager
def open_video(uri: str, threads: int = 0, strict: bool = True):
    """Open ``uri`` (local path or pyarrow URI) and yield ``(container, video_stream)``."""
    container = open_container(uri)
    try:
        if not container.streams.video:
            raise IncompleteVideoError(f"{uri}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads: 430-610 fps at 720p here
        if threads:
            stream.thread_count = threads
        if strict:
            stream.codec_context.options = {"err_detect": "explode"}
        yield container, stream
    finally:
        container.close()


def stream_fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(Fraction(rate))
    raise IncompleteVideoError("the video stream declares no frame rate")


def frame_index(frame: av.VideoFrame, stream: av.video.stream.VideoStream, fps: float) -> int | None:
    """The frame's index counted from the stream start, from its timestamp (seek-proof)."""
    pts = frame.pts if frame.pts is not None else frame.dts
    if pts is None or stream.time_base is None:
        return None
    start = stream.start_time or 0
    return int(round(float((pts - start) * stream.time_base) * fps))


def target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side scaled to ``short_side``, even sizes, aspect kept."""
    if not short_side or min(width, height) <= short_side:
        return width - width % 2 or width, height - height % 2 or height
    scale = short_side / min(width, height)
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def pick_indices(start: int, end: int, source_fps: float, fps: float | None) -> list[int]:
    """Frame indices in [start, end) that sample the range at ``fps`` (all frames if None)."""
    if not fps or fps >= source_fps:
        return list(range(start, end))
    step = source_fps / fps
    count = max(1, int(math.floor((end - start) / step)))
    return sorted({min(end - 1, start + int(round(k * step))) for k in range(count)})


def iter_frames(uri: str, start_frame: int = 0, end_frame: int | None = None, *,
                fps: float | None = None, short_side: int | None = None,
                size: tuple[int, int] | None = None, format: str = "rgb24",
                expected_frames: int | None = None, strict: bool = True, threads: int = 0,
                interpolation: str | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, array)`` for frames in ``[start_frame, end_frame)``.

    ``fps`` subsamples to a target rate; ``size=(w, h)`` or ``short_side`` scales in the
    decode path. A range that does not start at 0 seeks to the keyframe before it.
    ``expected_frames`` (the probe's count) turns a stream that stops early into an
    ``IncompleteVideoError`` when the range runs to the end.
    """
    with open_video(uri, threads=threads, strict=strict) as (container, stream):
        source_fps = stream_fps(stream)
        width, height = stream.codec_context.width, stream.codec_context.height
        out_w, out_h = size or target_size(width, height, short_side)
        last = end_frame if end_frame is not None else (expected_frames or 1 << 40)
        wanted = set(pick_indices(start_frame, last, source_fps, fps)) if fps else None
        if start_frame > 0:
            seconds = start_frame / source_fps + (stream.start_time or 0) * float(stream.time_base)
            container.seek(int(seconds / float(stream.time_base)), stream=stream, backward=True)
        previous, reached_end = -1, False
        try:
            for frame in container.decode(stream):
                index = frame_index(frame, stream, source_fps)
                index = previous + 1 if index is None or index <= previous else index
                previous = index
                if index >= last:
                    reached_end = True
                    break
                if index < start_frame or (wanted is not None and index not in wanted):
                    continue
                yield index, frame.to_ndarray(width=out_w, height=out_h, format=format, interpolation=interpolation)
        except av.error.FFmpegError as err:
            raise IncompleteVideoError(f"{uri}: decoding failed after frame {previous} "
                                       f"({type(err).__name__}: {err})") from err
        if reached_end:
            return
        declared = end_frame if end_frame is not None else expected_frames
        if declared and previous + 1 < declared * (1 - FRAME_COUNT_TOLERANCE):
            raise IncompleteVideoError(f"{uri}: the stream ends at frame {previous + 1}, "
                                       f"before frame {declared} that was expected")


def read_frames(uri: str, indices: Sequence[int], *, short_side: int | None = None,
                size: tuple[int, int] | None = None, format: str = "rgb24",
                strict: bool = True, interpolation: str | None = None) -> list[np.ndarray]:
    """The frames at ``indices`` (sorted, unique), with one seek to the first of them.

    Raises ``IncompleteVideoError`` if any asked-for frame is missing.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return []
    got: dict[int, np.ndarray] = {}
    targets = set(wanted)
    for index, array in iter_frames(uri, wanted[0], wanted[-1] + 1, short_side=short_side,
                                    size=size, format=format, strict=strict, interpolation=interpolation):
        if index in targets:
            got[index] = array
    missing = [i for i in wanted if i not in got]
    if missing:
        raise IncompleteVideoError(f"{uri}: frames {missing[:5]} did not decode")
    return [got[i] for i in wanted]


def decode_all(uri: str, threads: int = 0) -> int:
    """Decode every frame without conversion (the benchmark's baseline). Returns the count."""
    with open_video(uri, threads=threads, strict=False) as (container, stream):
        return sum(1 for _ in container.decode(stream))


_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


@contextmanager
def prefetched(items: Iterator[T], depth: int = 8) -> Iterator[Iterator[T]]:
    """Run ``items`` (e.g. ``container.decode(stream)``) in a thread, ``depth`` ahead of the consumer.

    Why: with FFmpeg frame threading the decoder's worker threads only get new work when
    the caller asks for the next frame. A caller that spends Python time on every frame
    (stage 1's scan) leaves them idle meanwhile, so per-frame work added to the wall time
    almost one for one. PyAV decodes without the GIL, so a thread that keeps asking lets
    decoding overlap the consumer's work. Errors raised by ``items`` re-raise in the
    consumer; leaving the ``with`` block stops and joins the thread (so the container can
    be closed safely), even when the consumer stops early.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            offer(_Failed(err))
            return
        offer(_END)

    def consume() -> Iterator[T]:
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    thread = threading.Thread(target=produce, name="decode-prefetch", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()

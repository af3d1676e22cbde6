"""Opening videos for decoding with PyAV: strict error handling, threads, output sizes.

Kept apart from ``curation/video.py`` (the stage 0 probe) so each module reads whole.
Frames are chosen by ``curation/frames.py`` (presentation times, right on variable frame
rate) and by stage 1's scan (``curation/clips/scan.py``); ``prefetched`` runs a frame
iterator in a thread ahead of a consumer that does per-frame work (the scan), so decoding
and that work overlap.

Scaling happens in the decode path: ``VideoFrame.reformat`` hands the YUV frame to
swscale, which converts and scales in one pass, so a 720p frame never exists as a
full-size RGB array when a 256 px one is asked for.

Strictness: FFmpeg decoders conceal corrupt data and demuxers stop quietly at
garbage. Training data should not hold concealed garbage, so by default a decode
error aborts (``err_detect=explode``) and a stream that ends well before the frame
count its header promised raises ``IncompleteVideoError``.
"""

from __future__ import annotations

import queue
import threading
from contextlib import contextmanager
from fractions import Fraction
from typing import Iterator, TypeVar

import av

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


def target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side scaled to ``short_side``, even sizes, aspect kept."""
    if not short_side or min(width, height) <= short_side:
        return width - width % 2 or width, height - height % 2 or height
    scale = short_side / min(width, height)
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


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

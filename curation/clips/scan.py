"""Stage 1's one decode pass over a video: shot boundaries, clips, motion, aesthetic frames.

Every frame, shrunk to about ``detect_width`` pixels by sampling the YUV planes directly
(no full-size RGB frame is ever built), feeds the shot-boundary stream
(``curation/clips/shots.py`` or ``transnet.py``). On time grids chosen with the frames
module's rule (``curation.frames.Selector``: the frame on screen at each grid time, by
presentation time, so variable frame rates are safe) the frames that motion and aesthetic
scoring need are kept small.

Bounded memory: clips are closed as soon as the boundary stream's ``horizon`` passes them
(``ClipPolicy``: a scene's end, or a ``max_seconds`` window of a long scene). A closed clip
gets its motion score at once (optical flow on its frame pairs) and its aesthetic frames
packed as JPEG; everything the scan held for frames before the open scene is dropped. So
the scan holds one scene's window of scoring frames plus the detectors' few seconds of
look-ahead, whatever the video's length.

Decoding runs in a prefetch thread (``decode.prefetched``), so FFmpeg's frame threads keep
decoding while the per-frame Python work runs.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import av
import cv2
import numpy as np

from curation.clips.quality import AESTHETIC, QualityConfig, pair_motion
from curation.clips.scenes import ClipPolicy, ScenesConfig
from curation.clips.shots import Boundary, BoundaryStream
from curation.decode import FRAME_COUNT_TOLERANCE, IncompleteVideoError, open_video, prefetched, stream_fps
from curation.frames import TIME_EPS, ClipFrames, Selector, encode_frames, frame_seconds

_FAST_FORMATS = {"yuv420p", "yuvj420p"}


def _limited_to_full() -> np.ndarray:
    """A LUT taking limited-range (16-235 luma, 16-240 chroma) YUV to full range."""
    levels = np.arange(256, dtype=np.float64)
    luma = np.clip((levels - 16) * 255 / 219, 0, 255)
    chroma = np.clip((levels - 128) * 255 / 224 + 128, 0, 255)
    return np.round(np.stack([luma, chroma, chroma], -1)).astype(np.uint8)[None]


_RANGE_LUT = _limited_to_full()


class SmallBGR:
    """Frames at 1/``stride`` size as BGR for the detectors, built in buffers reused frame to frame.

    For 4:2:0 frames the Y, U and V planes are sampled straight into one preallocated
    (rows, cols, 3) YUV buffer, expanded to full range (most video is limited range: black
    is luma 16, and detectors, blank frames and TransNetV2 expect black at 0) and converted
    with one ``cvtColor`` into a preallocated BGR buffer. The returned array is overwritten
    by the next call. Other formats go through swscale.
    """

    def __init__(self, width: int, height: int, stride: int):
        self.width, self.height, self.stride = width, height, stride
        rows, cols = len(range(0, height, stride)), len(range(0, width, stride))
        if stride % 2 == 0:  # chroma at stride/2 lands on the same grid as luma at stride
            half = stride // 2
            rows = min(rows, len(range(0, (height + 1) // 2, half)))
            cols = min(cols, len(range(0, (width + 1) // 2, half)))
        self.rows, self.cols = rows, cols
        self._yuv = np.empty((rows, cols, 3), np.uint8)
        self._bgr = np.empty((rows, cols, 3), np.uint8)

    @classmethod
    def for_stream(cls, stream: Any, detect_width: int) -> "SmallBGR":
        """Sized for ``stream``'s frames: the even stride that brings them to about ``detect_width``."""
        width, height = stream.codec_context.width, stream.codec_context.height
        return cls(width, height, max(2, 2 * int(round(width / (2 * detect_width)))))

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        s, rows, cols = self.stride, self.rows, self.cols
        if (frame.format.name not in _FAST_FORMATS or s % 2 or frame.width != self.width
                or frame.height != self.height):
            width = max(16, frame.width // s) // 2 * 2
            height = max(16, frame.height // s) // 2 * 2
            return frame.to_ndarray(width=width, height=height, format="bgr24")
        half, yuv = s // 2, self._yuv
        for channel, (plane, step) in enumerate(zip(frame.planes, (s, half, half))):
            pixels = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
            yuv[:, :, channel] = pixels[:rows * step:step, :cols * step:step]
        if frame.format.name == "yuv420p" and frame.color_range != 2:  # 2: JPEG (full) range
            cv2.LUT(yuv, _RANGE_LUT, dst=yuv)
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR, dst=self._bgr)


def gray(frame: av.VideoFrame, min_side: int) -> np.ndarray:
    """Luma, sampled down by an integer stride while its short side stays >= ``min_side``."""
    if frame.format.name in _FAST_FORMATS:
        plane = frame.planes[0]
        stride = max(1, min(frame.width, frame.height) // min_side)
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        return np.ascontiguousarray(luma[:frame.height:stride, :frame.width:stride])
    return frame.to_ndarray(format="gray")


class Grid:
    """The frame on screen at ``offset + k * period`` for k = 0, 1, ..., chosen as frames stream past.

    A ``curation.frames.Selector`` makes every choice (the frames module's rule, one frame
    late); this only feeds it targets a period ahead and numbers the targets it consumed.
    """

    def __init__(self, period: float, offset: float = 0.0):
        self.period, self.offset = period, offset
        self.selector = Selector(times=[])
        self._queued = 0  # targets handed to the selector so far
        self._first = 0  # index of the selector's first pending target

    def offer(self, item: Any, number: int, seconds: float) -> list[tuple[int, Any]]:
        """``(k, item)`` for every target k whose frame is now known (the previous frame's, usually)."""
        while self.offset + self._queued * self.period <= seconds + self.period:
            self.selector.times.append(self.offset + self._queued * self.period)
            self._queued += 1
        before = len(self.selector.times)
        chosen = self.selector.offer(item, number, seconds)
        return self._number(chosen, before - len(self.selector.times))

    def finish(self, end_s: float) -> list[tuple[int, Any]]:
        """At the video's end: the last frame, for targets before ``end_s`` (when it leaves the screen)."""
        pending = [t for t in self.selector.times if t < end_s - TIME_EPS]
        return self._number(self.selector.finish(), len(pending))

    def _number(self, chosen: list, count: int) -> list[tuple[int, Any]]:
        first, self._first = self._first, self._first + count
        return [(k, chosen[0]) for k in range(first, first + count)] if chosen and count else []


@dataclass
class ClipRange:
    """One row of the clip policy with what the scan measured for it."""

    start: int
    end: int
    status: str
    start_s: float
    end_s: float
    motion: float | None = None
    frames: bytes | None = None  # the aesthetic frames, packed for the FRAMES column


@dataclass
class Scan:
    """What one pass over a video found."""

    fps: float
    num_frames: int
    clips: list[ClipRange]
    boundaries: list[Boundary] = field(default_factory=list)


class Scoring:
    """Scoring frames and timestamps of the part of the video whose clips are still open."""

    def __init__(self, quality: QualityConfig | None):
        self.quality = quality
        self.pts: deque[float] = deque()  # pts of frames first.. (the open part)
        self.first = 0
        self.grey: dict[int, np.ndarray] = {}  # motion frames by frame number
        self.looks: dict[int, np.ndarray] = {}  # aesthetic frames by frame number
        self.starts: dict[int, int] = {}  # motion target k -> frame number of its first frame
        self.ends: dict[int, int] = {}  # motion target k -> frame number of its second frame
        if quality is not None:
            self.grids = (Grid(quality.motion_grid_s), Grid(quality.motion_grid_s, quality.motion_gap_s),
                          Grid(quality.aesthetic_grid_s))

    def add(self, n: int, seconds: float, frame: av.VideoFrame) -> None:
        self.pts.append(seconds)
        if self.quality is not None:
            for grid, chosen in zip(self.grids, (g.offer((n, frame), n, seconds) for g in self.grids)):
                self._keep(grid, chosen)

    def finish(self, end_s: float) -> None:
        if self.quality is not None:
            for grid in self.grids:
                self._keep(grid, grid.finish(end_s))

    def _keep(self, grid: Grid, chosen: list[tuple[int, Any]]) -> None:
        q = self.quality
        for k, (n, frame) in chosen:
            if grid is self.grids[2]:
                self.looks.setdefault(n, q.aesthetic_frame(frame))
                continue
            if n not in self.grey:
                self.grey[n] = q.motion_frame(gray(frame, 3 * q.motion_short_side // 2))
            (self.starts if grid is self.grids[0] else self.ends)[k] = n

    def seconds(self, n: int, end_s: float) -> float:
        index = n - self.first
        return self.pts[index] if index < len(self.pts) else end_s

    def close(self, clip: ClipRange) -> ClipRange:
        """Score a kept clip: motion from its frame pairs, aesthetic frames packed."""
        q = self.quality
        if q is None or clip.status != "kept":
            return clip
        pairs = [(self.starts[k], self.ends[k]) for k in sorted(self.starts)
                 if k in self.ends and clip.start <= self.starts[k] < self.ends[k] < clip.end]
        pairs = _spread(pairs, q.motion_pairs)
        if pairs:
            clip.motion = float(np.mean([
                pair_motion(self.grey[a], self.grey[b], self.seconds(b, 0) - self.seconds(a, 0), q.motion_method)
                for a, b in pairs]))
        looks = _spread([n for n in sorted(self.looks) if clip.start <= n < clip.end], q.aesthetic_frames)
        if looks:
            frames = ClipFrames(np.stack([self.looks[n] for n in looks]), np.asarray(looks, np.int64),
                                np.asarray([self.seconds(n, 0) for n in looks], np.float64))
            clip.frames = encode_frames({AESTHETIC: frames}, jpeg_quality=q.aesthetic_jpeg_quality or None)
        return clip

    def forget(self, before: int, pts_before: int) -> None:
        """Drop the scoring frames of frames before ``before`` (only the open scene can still
        make a kept clip) and the timestamps before ``pts_before`` (rows not emitted need them)."""
        while self.first < pts_before and self.pts:
            self.pts.popleft()
            self.first += 1
        for table in (self.grey, self.looks):
            for n in [n for n in table if n < before]:
                del table[n]
        for table in (self.starts, self.ends):
            for k in [k for k, n in table.items() if n < before]:
                del table[k]


def _spread(items: list, count: int) -> list:
    if len(items) <= count:
        return items
    return [items[int(round(k * (len(items) - 1) / max(count - 1, 1)))] for k in range(count)]


def scan_video(uri: str, config: ScenesConfig, quality: QualityConfig | None = None,
               expected_frames: int | None = None, shot_model: Any = None) -> Scan:
    """Decode ``uri`` once: boundaries, clips (closed as they become final), their scores' inputs.

    ``shot_model``: a loaded TransNetV2 when ``config.detector`` is ``transnetv2``.
    """
    clips: list[ClipRange] = []
    found: list[Boundary] = []
    index, seconds, duration = -1, 0.0, 0.0
    with open_video(uri, strict=config.strict_decode) as (container, stream):
        fps = stream_fps(stream)
        shrink = SmallBGR.for_stream(stream, config.detect_width)
        boundaries: BoundaryStream = config.boundary_stream(fps, shot_model)
        policy = ClipPolicy(config, fps)
        scoring = Scoring(quality)

        def close(ranges: list[tuple[int, int, str]], end_s: float) -> None:
            for start, end, status in ranges:
                clip = ClipRange(start, end, status, scoring.seconds(start, end_s), scoring.seconds(end, end_s))
                clips.append(scoring.close(clip))
            scoring.forget(policy.start, policy.open_from)

        try:
            with prefetched(container.decode(stream)) as frames:
                for index, frame in enumerate(frames):
                    found_s = frame_seconds(frame, stream)
                    seconds = found_s if found_s is not None else (seconds + 1 / fps if index else 0.0)
                    duration = float(frame.duration * frame.time_base) if frame.duration and frame.time_base \
                        else 1 / fps
                    boundaries.push(index, shrink(frame))
                    scoring.add(index, seconds, frame)
                    new = boundaries.pop()
                    found.extend(new)
                    # frames before `index` have their scoring frames chosen (one frame late)
                    close(policy.add(new, min(boundaries.horizon, index)), math.inf)
        except av.error.FFmpegError as err:
            raise IncompleteVideoError(f"{uri}: decoding failed after frame {index} "
                                       f"({type(err).__name__}: {err})") from err
        num_frames = index + 1
        if num_frames == 0:
            raise IncompleteVideoError(f"{uri}: no frame decodes")
        end_s = seconds + duration
        boundaries.finish()
        scoring.finish(end_s)
        new = boundaries.pop()
        found.extend(new)
        close(policy.add(new, num_frames) + policy.finish(num_frames), end_s)
    if expected_frames and num_frames < expected_frames * (1 - FRAME_COUNT_TOLERANCE):
        raise IncompleteVideoError(f"{uri}: the stream ends at frame {num_frames} of "
                                   f"{expected_frames} the header declares")
    return Scan(fps, num_frames, clips, found)

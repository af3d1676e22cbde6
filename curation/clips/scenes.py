"""Scene splitting (MAGREF Appendix B.1): one video in, candidate clips out.

One decode pass per video does all of stage 1's frame work before captioning:

* every frame, shrunk to about ``detect_width`` pixels by sampling the YUV planes
  directly (no full-size RGB frame is ever built), feeds PySceneDetect's detector;
* on a time grid, the frames that motion and aesthetic scoring need are kept small
  (``QualityConfig`` says which and how big), so ``quality.ClipScorer`` never decodes;
* decoding runs in a prefetch thread (``decode.prefetched``), so FFmpeg's frame threads
  keep decoding while this per-frame Python work runs (it cost ~1:1 in wall time before).

The clip policy then turns cuts into clips: ``trim_frames`` are dropped on both
sides of every cut (no clip holds a transition frame), scenes shorter than
``min_seconds`` become ``too_short`` rows, and scenes longer than ``max_seconds``
are cut into windows. Every frame range the policy looked at is a row: kept for
scoring, or filtered with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import av
import cv2
import numpy as np
import pyarrow as pa

from curation.clips.quality import AESTHETIC, MOTION, QualityConfig
from curation.decode import FRAME_COUNT_TOLERANCE, IncompleteVideoError, open_video, prefetched, stream_fps
from curation.envelope import per_input, to_table
from curation.frames import FRAMES, ClipFrames, encode_frames, frame_seconds
from curation.operator import TaskPool
from schemas.ids import clip_id
from schemas.tables import CLIPS, KEPT

TOO_SHORT = "too_short"
DETECTORS = ("adaptive", "content")
WINDOWS = ("fixed", "even")


@dataclass
class ScenesConfig:
    """Scene detection and the clip policy. Thresholds are PySceneDetect's own units."""

    detector: str = "adaptive"  # AdaptiveDetector finds synthetic and real cuts; "content" = ContentDetector
    adaptive_threshold: float = 3.0  # AdaptiveDetector: a frame's change over its neighbours' average
    min_content_val: float = 15.0  # AdaptiveDetector: the least absolute change that can be a cut
    content_threshold: float = 27.0  # ContentDetector's threshold (HSV change, 0-255)
    min_scene_frames: int = 8  # the detector's own minimum distance between cuts
    # frames shrink to about this width for detection (cuts are colour changes); 160, 96, 80 and 64
    # found the same cuts, exactly, on the benchmark media (synthetic and camera-like)
    detect_width: int = 96
    min_seconds: float = 2.0  # shorter scenes become too_short rows
    max_seconds: float = 10.0  # longer scenes are cut into windows
    trim_frames: int = 2  # dropped on each side of every cut
    window: str = "fixed"  # long scenes: "fixed" windows of max_seconds (+ remainder), or "even" splits
    strict_decode: bool = True  # a decode error makes the video an error row
    # one video per task: the scan decodes the whole video
    pool: TaskPool = field(default_factory=lambda: TaskPool(batch_size=1, num_cpus=0.5))

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"scenes.detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.window not in WINDOWS:
            raise ValueError(f"scenes.window must be one of {WINDOWS}, got {self.window!r}")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 0 < min_seconds <= max_seconds, got {self.min_seconds}, {self.max_seconds}")
        if self.trim_frames < 0 or self.min_scene_frames < 1 or self.detect_width < 16:
            raise ValueError("trim_frames must be >= 0, min_scene_frames >= 1, detect_width >= 16")

    def make_detector(self):
        from scenedetect import AdaptiveDetector, ContentDetector

        if self.detector == "content":
            return ContentDetector(threshold=self.content_threshold, min_scene_len=self.min_scene_frames)
        return AdaptiveDetector(adaptive_threshold=self.adaptive_threshold, min_content_val=self.min_content_val,
                                min_scene_len=self.min_scene_frames)


# ---------------------------------------------------------------------------
# The clip policy: pure arithmetic on frame numbers, tested on its own.
# ---------------------------------------------------------------------------

def clip_ranges(cuts: list[int], num_frames: int, fps: float, config: ScenesConfig) -> list[tuple[int, int, str]]:
    """``(start, end_exclusive, status)`` for every clip the policy makes from ``cuts``."""
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < num_frames), num_frames]
    min_len = int(round(config.min_seconds * fps))
    max_len = max(min_len, int(round(config.max_seconds * fps)))
    out = []
    for scene_start, scene_end in zip(bounds[:-1], bounds[1:]):
        start = scene_start + (config.trim_frames if scene_start > 0 else 0)
        end = scene_end - (config.trim_frames if scene_end < num_frames else 0)
        if end <= start:
            continue  # a flash shorter than the trims: nothing of it is usable or worth a row
        for a, b in _windows(start, end, max_len, config.window):
            out.append((a, b, KEPT if b - a >= min_len else TOO_SHORT))
    return out


def _windows(start: int, end: int, max_len: int, mode: str) -> list[tuple[int, int]]:
    length = end - start
    if length <= max_len:
        return [(start, end)]
    if mode == "even":
        count = -(-length // max_len)
        edges = [start + round(i * length / count) for i in range(count + 1)]
        return list(zip(edges[:-1], edges[1:]))
    edges = list(range(start, end, max_len)) + [end]
    return list(zip(edges[:-1], edges[1:]))


# ---------------------------------------------------------------------------
# The scan: one decode pass.
# ---------------------------------------------------------------------------

_FAST_FORMATS = {"yuv420p", "yuvj420p"}


class SmallBGR:
    """Frames at 1/``stride`` size as BGR for the detector, built in buffers reused frame to frame.

    For 4:2:0 frames the Y, U and V planes are sampled straight into one preallocated
    (rows, cols, 3) YUV buffer and converted with one ``cvtColor`` into a preallocated BGR
    buffer: no full-size frame, no per-frame ``merge``/contiguous copies (this runs on every
    frame, so its allocations showed up next to decode). The returned array is overwritten
    by the next call; PySceneDetect's detectors convert it to HSV at once and keep only that.
    Other formats go through swscale.
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
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR, dst=self._bgr)


def gray(frame: av.VideoFrame, min_side: int) -> np.ndarray:
    """Luma, sampled down by an integer stride while its short side stays >= ``min_side``."""
    if frame.format.name in _FAST_FORMATS:
        plane = frame.planes[0]
        stride = max(1, min(frame.width, frame.height) // min_side)
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        return np.ascontiguousarray(luma[:frame.height:stride, :frame.width:stride])
    return frame.to_ndarray(format="gray")


@dataclass
class Scan:
    """What one pass over a video found."""

    fps: float
    num_frames: int
    cuts: list[int]
    motion: dict[int, np.ndarray]  # frame index -> small grey frame (pair starts and ends)
    aesthetic: dict[int, np.ndarray]  # frame index -> small RGB frame
    seconds: dict[int, float] = field(default_factory=dict)  # frame index -> pts (s) of kept frames


def scan_video(uri: str, config: ScenesConfig, quality: QualityConfig | None = None,
               expected_frames: int | None = None) -> Scan:
    """Decode ``uri`` once: scene cuts, plus the scoring frames ``quality`` asks for."""
    from scenedetect.common import FrameTimecode

    detector = config.make_detector()
    cuts: list[int] = []
    motion: dict[int, np.ndarray] = {}
    aesthetic: dict[int, np.ndarray] = {}
    seconds: dict[int, float] = {}
    with open_video(uri, strict=config.strict_decode) as (container, stream):
        fps = stream_fps(stream)
        width = stream.codec_context.width
        stride = max(2, 2 * int(round(width / (2 * config.detect_width))))
        shrink = SmallBGR(width, stream.codec_context.height, stride)
        motion_step = motion_gap = aesthetic_step = 0
        if quality is not None:
            motion_step = max(1, int(round(quality.motion_grid_s * fps)))
            motion_gap = max(1, int(round(quality.motion_gap_s * fps)))
            aesthetic_step = max(1, int(round(quality.aesthetic_grid_s * fps)))
        index = -1
        try:
            with prefetched(container.decode(stream)) as frames:
                for index, frame in enumerate(frames):
                    timecode = FrameTimecode(index, fps=fps)
                    cuts.extend(tc.frame_num for tc in detector.process_frame(timecode, shrink(frame)))
                    if quality is None:
                        continue
                    if index % motion_step == 0 or (index >= motion_gap and (index - motion_gap) % motion_step == 0):
                        motion[index] = quality.motion_frame(gray(frame, 3 * quality.motion_short_side // 2))
                        seconds[index] = _seconds(frame, stream, index, fps)
                    if index % aesthetic_step == 0:
                        aesthetic[index] = quality.aesthetic_frame(frame)
                        seconds[index] = _seconds(frame, stream, index, fps)
        except av.error.FFmpegError as err:
            raise IncompleteVideoError(f"{uri}: decoding failed after frame {index} "
                                       f"({type(err).__name__}: {err})") from err
        num_frames = index + 1
        cuts.extend(tc.frame_num for tc in detector.post_process(FrameTimecode(max(num_frames - 1, 0), fps=fps)))
    if num_frames == 0:
        raise IncompleteVideoError(f"{uri}: no frame decodes")
    if expected_frames and num_frames < expected_frames * (1 - FRAME_COUNT_TOLERANCE):
        raise IncompleteVideoError(f"{uri}: the stream ends at frame {num_frames} of "
                                   f"{expected_frames} the header declares")
    return Scan(fps, num_frames, sorted(set(cuts)), motion, aesthetic, seconds)


def _seconds(frame: av.VideoFrame, stream: Any, index: int, fps: float) -> float:
    found = frame_seconds(frame, stream)
    return found if found is not None else index / fps


def clip_frames(scan: Scan, start: int, end: int, quality: QualityConfig) -> bytes:
    """The scoring frames of clip [start, end) for the ``FRAMES`` column (``curation.frames``):
    set ``motion`` holds grey pairs (start, start + gap, ...), set ``aesthetic`` RGB frames."""
    gap = max(1, int(round(quality.motion_gap_s * scan.fps)))
    starts = [i for i in sorted(scan.motion) if start <= i and i + gap < end and i + gap in scan.motion]
    sets: dict[str, ClipFrames] = {}
    pairs = [j for i in _spread(starts, quality.motion_pairs) for j in (i, i + gap)]
    if pairs:
        sets[MOTION] = _frames_of(scan, scan.motion, pairs)
    looks = _spread([i for i in sorted(scan.aesthetic) if start <= i < end], quality.aesthetic_frames)
    if looks:
        sets[AESTHETIC] = _frames_of(scan, scan.aesthetic, looks)
    return encode_frames(sets)


def _frames_of(scan: Scan, images: dict[int, np.ndarray], indices: list[int]) -> ClipFrames:
    return ClipFrames(np.stack([images[i] for i in indices]), np.asarray(indices, np.int64),
                      np.asarray([scan.seconds.get(i, i / scan.fps) for i in indices], np.float64))


def _spread(items: list[int], count: int) -> list[int]:
    if len(items) <= count:
        return items
    return [items[int(round(k * (len(items) - 1) / max(count - 1, 1)))] for k in range(count)]


class ClipSplitter:
    """Stage 1, step 1: ``videos`` rows in, candidate ``clips`` rows (+ scoring frames) out.

    Too-short scenes come out as ``too_short`` rows; a video that fails to decode
    becomes one error row and none of its clips.
    """

    def __init__(self, config: ScenesConfig, quality: QualityConfig | None = None):
        self.config = config
        self.quality = quality

    def split(self, video: dict[str, Any]) -> list[dict[str, Any]]:
        scan = scan_video(video["uri"], self.config, self.quality, expected_frames=video.get("num_frames"))
        rows = []
        for start, end, status in clip_ranges(scan.cuts, scan.num_frames, scan.fps, self.config):
            row = {
                "clip_id": clip_id(video["video_id"], start, end), "video_id": video["video_id"],
                "uri": video["uri"], "start_frame": start, "end_frame": end,
                "start_s": start / scan.fps, "end_s": end / scan.fps, "fps": scan.fps,
                "width": video.get("width"), "height": video.get("height"),
                "motion": None, "aesthetic": None, "status": status, "caption": None, "subjects": None,
            }
            if self.quality is not None:
                row[FRAMES] = clip_frames(scan, start, end, self.quality) if status == KEPT else None
            rows.append(row)
        return rows

    def __call__(self, batch: pa.Table) -> pa.Table:
        columns = [c for c in ("uri", "video_id", "num_frames", "width", "height") if c in batch.column_names]
        rows = per_input(batch.select(columns).to_pylist(), "video_id", self.split)
        return to_table(rows, _SCHEMA)


_SCHEMA = pa.schema([*CLIPS, pa.field(FRAMES, pa.binary())])

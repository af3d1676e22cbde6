"""Video files: probing (stage 0) with PyAV.

Probing reads the container header and decodes the first frame, because headers
lie: a truncated file or a renamed text file can look fine until a frame is asked
for. Every failure names the file and the reason, and becomes that file's error row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import av
import pyarrow as pa

from curation.decode import IncompleteVideoError, open_container, stream_fps
from curation.envelope import per_input, to_table
from curation.operator import TaskPool, setting
from curation.sources import open_binary, size_of
from schemas.ids import video_id_of
from schemas.tables import VIDEOS


class BadVideoError(ValueError):
    """A file that is not a usable video. The message starts with the file's uri."""


@dataclass
class ProbeConfig:
    """Stage 0 settings. ``min_side`` rejects videos too small to hold a subject."""

    min_side: int = setting(16, help="pixels; a smaller frame cannot hold a subject")
    decode_check: bool = setting(True, help="decode the first frame too: headers lie")
    pool: TaskPool = field(default_factory=lambda: TaskPool(batch_size=8, num_cpus=0.5))

    def __post_init__(self) -> None:
        if self.min_side < 1:
            raise ValueError(f"min_side must be >= 1, got {self.min_side}")


def probe_video(uri: str, config: ProbeConfig = ProbeConfig()) -> dict[str, Any]:
    """Read one video's metadata into a ``videos`` row, or raise ``BadVideoError``."""
    size = size_of(uri)
    if size == 0:
        raise BadVideoError(f"{uri}: empty file (0 bytes)")
    with open_binary(uri) as stream:
        video_id = video_id_of(stream)
    try:
        container = open_container(uri)
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise BadVideoError(f"{uri}: not a readable video container ({type(err).__name__}: {err})") from err
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no"]
            raise BadVideoError(f"{uri}: no video stream (found {', '.join(kinds)} streams)")
        video = container.streams.video[0]
        width, height = video.codec_context.width, video.codec_context.height
        if min(width, height) < config.min_side:
            raise BadVideoError(f"{uri}: frame size {width}x{height} is below min_side={config.min_side}")
        try:
            fps = stream_fps(video)
        except IncompleteVideoError as err:
            raise BadVideoError(f"{uri}: {err}") from err
        duration = None
        if video.duration is not None and video.time_base is not None:
            duration = float(video.duration * video.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        if config.decode_check:
            try:
                next(container.decode(video))
            except (StopIteration, av.error.FFmpegError) as err:
                raise BadVideoError(f"{uri}: no frame decodes ({type(err).__name__}: {err})") from err
        frames = video.frames or (round(duration * fps) if duration and fps else None)
        if not frames:
            raise BadVideoError(f"{uri}: the video stream holds no frames")
        return {
            "uri": uri, "video_id": video_id, "bytes": size, "duration_s": duration, "fps": fps,
            "num_frames": frames, "width": width, "height": height,
            "codec": video.codec_context.name, "pix_fmt": video.codec_context.pix_fmt,
            "has_audio": bool(container.streams.audio),
        }


class VideoProber:
    """Stage 0 operator: a batch of ``uri`` rows in, ``videos`` rows (or error rows) out."""

    def __init__(self, config: ProbeConfig):
        self.config = config

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = per_input(batch.select(["uri"]).to_pylist(), "uri",
                         lambda row: [probe_video(row["uri"], self.config)])
        return to_table(rows, VIDEOS)

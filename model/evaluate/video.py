"""A generated video as the metrics see it: every frame small (motion), a few frames full size (models).

Generated videos are short (MAGREF: 77 frames), so one decode pass keeps every frame at
``motion_side`` pixels and ``count`` evenly spaced frames at full size; a longer video is
read up to ``max_frames``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from curation.decode import open_video


class VideoMissingError(FileNotFoundError):
    """The entry's video does not exist (yet): ``--generate`` makes it."""


@dataclass
class VideoFrames:
    sampled: np.ndarray  # (N, H, W, 3) uint8, N evenly spaced frames at full size
    sampled_indices: np.ndarray  # (N,) frame numbers
    small: np.ndarray  # (T, h, w, 3) uint8, every frame, short side ``motion_side``
    found: dict = field(default_factory=dict)  # per-video results metrics share (the sampled frames' faces)


def read_video(path: str | Path, count: int = 8, motion_side: int = 128, max_frames: int = 256) -> VideoFrames:
    path = Path(path)
    if not path.is_file():
        raise VideoMissingError(f"video {str(path)!r} does not exist")
    full: list[np.ndarray] = []
    with open_video(str(path)) as (container, stream):  # every frame in presentation order
        for frame in container.decode(stream):
            full.append(frame.to_ndarray(format="rgb24"))
            if len(full) >= max_frames:
                break
    if not full:
        raise ValueError(f"{path}: no frame decodes")
    picks = np.unique(np.linspace(0, len(full) - 1, min(count, len(full))).round().astype(int))
    height, width = full[0].shape[:2]
    scale = min(1.0, motion_side / min(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) if scale < 1 else f for f in full])
    return VideoFrames(np.stack([full[i] for i in picks]), picks, small)

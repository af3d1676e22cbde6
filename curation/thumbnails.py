"""Small pictures for people looking at a run: clip frame strips and image thumbnails.

The contact sheet (``python -m pipelines.inspect_run --run-dir RUN --html out.html``) inlines every
picture, so each must be small: frames are decoded straight to thumbnail height (swscale
scales in the decode path) and stored references are shrunk before they are inlined.
JPEG for frames (photos, no transparency), PNG for references (cut-outs keep their alpha).
"""

from __future__ import annotations

import io

import numpy as np

from curation.frames import read_clip_frames, uniform
from curation.images import encode_png, read_image


def clip_strip(uri: str, start_frame: int, end_frame: int, start_s: float, end_s: float,
               count: int = 6, height: int = 72) -> list[bytes]:
    """``count`` frames spread over the clip, ``height`` px high, as JPEG bytes."""
    def size(width: int, source_height: int) -> tuple[int, int]:
        return max(2, int(round(width * height / source_height / 2)) * 2), height

    frames = read_clip_frames(uri, start_frame, end_frame, start_s, end_s, uniform(count, size=size), strict=False)
    return [encode_jpeg(image) for image in frames.images]


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def thumbnail(data: bytes, max_side: int = 128) -> tuple[bytes, tuple[int, int]]:
    """A PNG no larger than ``max_side`` (alpha kept), and the original's (width, height)."""
    from PIL import Image

    small = read_image(data)
    original = small.size
    small.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return encode_png(np.asarray(small.convert("RGBA" if "A" in small.getbands() else "RGB"))), original

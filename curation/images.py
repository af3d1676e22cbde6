"""Images as stages 2-4 share them: PNG bytes in tables, RGBA cut-outs, crops with margins.

(Written to the contract of the stage-framework issue so stage 4 could be built before
it landed; main's version replaces this file at the merge.)
"""

from __future__ import annotations

import io

import numpy as np


def encode_png(array: np.ndarray) -> bytes:
    """uint8 (H, W), (H, W, 3) or (H, W, 4) as PNG bytes (lossless, what every table stores)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes, mode: str | None = None) -> np.ndarray:
    """PNG (or any Pillow format) bytes as a uint8 array, converted to ``mode`` ("RGB", "L", "RGBA") if given."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if mode is not None and image.mode != mode:
            image = image.convert(mode)
        return np.asarray(image).copy()


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The tight (x, y, w, h) box of a mask's nonzero pixels, or None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    return x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1


def rgba_cutout(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The masked object on transparency, cropped tight, and its box in the image (Eq. 12)."""
    box = mask_box(mask)
    if box is None:
        raise ValueError("empty mask: nothing to cut out")
    x, y, w, h = box
    rgba = np.dstack([image[y:y + h, x:x + w, :3], np.where(mask[y:y + h, x:x + w] > 0, 255, 0).astype(np.uint8)])
    return rgba, box


def crop_with_margin(image: np.ndarray, box_xywh, margin: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``box`` grown by ``margin`` x its size on each side, clipped to the image; the crop and its box."""
    x, y, w, h = (float(v) for v in box_xywh)
    height, width = image.shape[:2]
    x0 = max(0, int(np.floor(x - margin * w)))
    y0 = max(0, int(np.floor(y - margin * h)))
    x1 = min(width, int(np.ceil(x + w + margin * w)))
    y1 = min(height, int(np.ceil(y + h + margin * h)))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {box_xywh} lies outside the {width}x{height} image")
    return image[y0:y1, x0:x1].copy(), (x0, y0, x1 - x0, y1 - y0)

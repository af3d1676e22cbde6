"""Images as stages 2-4 store and cut them: PNG bytes, RGBA cut-outs, crops, mask boxes.

Tables hold images inline as PNG (DESIGN.md "Tables"), so every stage encodes and
decodes the same way here. Boxes are ``(x, y, w, h)`` in integer pixels of the image
they came from, the paper's convention (Eq. 11). Masks are 2-D arrays whose non-zero
pixels are the object; a PNG mask is stored as 0/255 grey so any image viewer shows it.

OpenCV encodes (several times faster than PIL on large masks); PIL decodes, since its
mode conversion (``"L"``, ``"RGB"``, ``"RGBA"``) is exactly what readers ask for.
"""

from __future__ import annotations

import io

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x, y, w, h

PNG_COMPRESSION = 3  # zlib level: binary masks and cut-outs compress well already at 3


def encode_png(array: np.ndarray) -> bytes:
    """A uint8 (or bool) image as PNG: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA.

    A bool array is a mask and is stored as 0/255 grey.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 or bool pixels, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    elif array.ndim != 2:
        raise ValueError(f"encode_png needs (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(array), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise ValueError(f"PNG encoding failed for an image of shape {array.shape}")
    return buffer.tobytes()


def decode_png(data: bytes, mode: str | None = None) -> np.ndarray:
    """PNG bytes to a uint8 array; ``mode`` ("L", "RGB", "RGBA") converts, None keeps the stored one."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if mode is not None and image.mode != mode:
            image = image.convert(mode)
        elif image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.mode else "RGB")
        return np.asarray(image).copy()


def mask_box(mask: np.ndarray) -> Box | None:
    """The tight box of a mask's non-zero pixels, or None for an empty mask."""
    mask = np.asarray(mask)
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return x0, y0, x1 - x0 + 1, y1 - y0 + 1


def rgba_cutout(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Box]:
    """The object on transparency (Eq. 12's reference image): a tight RGBA crop and its box.

    Alpha is the mask (255 inside, 0 outside); colour inside equals the image's pixels,
    colour outside is zeroed so no background leaks into a reference that a later step
    composites (stage 4's canvas puts references on white).
    """
    image, mask = np.asarray(image), np.asarray(mask).astype(bool)
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    box = mask_box(mask)
    if box is None:
        raise ValueError("cannot cut out an empty mask")
    x, y, w, h = box
    inside = mask[y:y + h, x:x + w]
    rgb = image[y:y + h, x:x + w, :3] * inside[..., None]
    rgba = np.concatenate([rgb, (inside * np.uint8(255))[..., None]], axis=2).astype(np.uint8)
    return rgba, box


def crop_with_margin(image: np.ndarray, box_xywh: Box, margin: float) -> tuple[np.ndarray, Box]:
    """Crop ``box`` grown by ``margin`` (a fraction of its width/height per side), clipped to the image.

    Returns the crop and the box actually cropped (in the image's pixels).
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    height, width = image.shape[:2]
    x, y, w, h = box_xywh
    dx, dy = w * margin, h * margin
    x0, y0 = max(0, int(np.floor(x - dx))), max(0, int(np.floor(y - dy)))
    x1, y1 = min(width, int(np.ceil(x + w + dx))), min(height, int(np.ceil(y + h + dy)))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {tuple(box_xywh)} lies outside the {width}x{height} image")
    return image[y0:y1, x0:x1], (x0, y0, x1 - x0, y1 - y0)

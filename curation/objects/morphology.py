"""Mask refinement and shape measures (MAGREF Appendix B.2, Eq. 13).

SAM2's masks carry speckles outside the object, pin holes inside it and ragged edges.
``refine`` applies the paper's erosion/dilation as a morphological *opening* (removes
specks and hair-thin bridges) then a *closing* (seals small gaps), with an elliptical
kernel scaled to the object's size so a 40-px cup and a 600-px car get the same
relative smoothing; then keeps the largest connected component (a reference image is
one object) and fills the holes inside it, up to a size (a ring keeps its hole).

``solidity`` and ``significant_components`` are the shape measures the ``irregular``
filter reads (``curation/objects/filters.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from curation.operator import setting


@dataclass
class MorphologyConfig:
    kernel_fraction: float = setting(0.03, help="kernel side as a fraction of sqrt(object area) (the object's size)")
    min_kernel: int = setting(3, help="px; 3 removes 1-2 px specks on any object")
    max_kernel: int = setting(31, help="px; bounds the cost on very large masks")
    fill_holes_max: float = setting(0.1, help="fill holes up to this fraction of the object's area (1.0: every hole)")

    def __post_init__(self) -> None:
        if self.kernel_fraction < 0 or self.fill_holes_max < 0:
            raise ValueError("kernel_fraction and fill_holes_max must be >= 0")
        if not 1 <= self.min_kernel <= self.max_kernel:
            raise ValueError(f"need 1 <= min_kernel <= max_kernel, got {self.min_kernel}, {self.max_kernel}")


def kernel_size(area: int, config: MorphologyConfig) -> int:
    """An odd kernel side proportional to the object's linear size."""
    side = int(round(config.kernel_fraction * math.sqrt(max(area, 0))))
    side = min(max(side, config.min_kernel), config.max_kernel)
    return side if side % 2 else side + 1


def refine(mask: np.ndarray, config: MorphologyConfig | None = None) -> np.ndarray:
    """Eq. 13: opening, closing, largest component, holes filled. Returns a bool mask.

    Works on the mask's box grown by the kernel, not the whole frame: a 1080p frame is
    ~50x the pixels of a typical object's box.
    """
    config = config or MorphologyConfig()
    binary = np.asarray(mask) > 0
    out = np.zeros(binary.shape, bool)
    area = int(binary.sum())
    if not area:
        return out
    side = kernel_size(area, config)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    rows, cols = np.flatnonzero(binary.any(axis=1)), np.flatnonzero(binary.any(axis=0))
    y0, y1 = max(0, rows[0] - side), min(binary.shape[0], rows[-1] + side + 1)
    x0, x1 = max(0, cols[0] - side), min(binary.shape[1], cols[-1] + side + 1)
    crop = binary[y0:y1, x0:x1].astype(np.uint8)
    # Zero padding: the closing must not glue the object to the frame border.
    padded = cv2.copyMakeBorder(crop, side, side, side, side, cv2.BORDER_CONSTANT, value=0)
    padded = cv2.morphologyEx(padded, cv2.MORPH_OPEN, kernel)
    padded = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)
    smooth = padded[side:-side, side:-side]
    out[y0:y1, x0:x1] = fill_holes(largest_component(smooth), config.fill_holes_max)
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The biggest 8-connected component of a mask (bool); empty in, empty out."""
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return binary.astype(bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def fill_holes(mask: np.ndarray, max_fraction: float = 1.0) -> np.ndarray:
    """Fill background regions enclosed by the mask, each up to ``max_fraction`` of its area.

    A hole is a 4-connected background region that does not touch the image border.
    """
    binary = np.asarray(mask) > 0
    area = int(binary.sum())
    if not area or max_fraction <= 0:
        return binary
    background = (~binary).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=4)
    height, width = binary.shape
    x, y, w, h, size = (stats[1:, i] for i in range(5))
    inside = (x > 0) & (y > 0) & (x + w < width) & (y + h < height)
    holes = 1 + np.flatnonzero(inside & (size <= max_fraction * area))
    if not len(holes):
        return binary
    return binary | np.isin(labels, holes)


def significant_components(mask: np.ndarray, min_fraction: float = 0.1) -> int:
    """How many 8-connected pieces a mask has that are at least ``min_fraction`` of the largest.

    Specks do not count; a mask in five sizeable pieces is fragmented (``irregular``).
    """
    binary = np.asarray(mask) > 0
    rows, cols = np.flatnonzero(binary.any(axis=1)), np.flatnonzero(binary.any(axis=0))
    if not len(rows):
        return 0
    crop = binary[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.uint8)  # labelling costs per pixel
    count, _, stats, _ = cv2.connectedComponentsWithStats(crop, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    return int((areas >= min_fraction * areas.max()).sum())


def solidity(mask: np.ndarray) -> float:
    """Area over convex-hull area, both counted in pixels (1.0 for convex shapes, low for a comb).

    The hull is rasterised rather than measured as a polygon: a polygon through pixel
    centres is smaller than the pixels it encloses, which would give solidity > 1.
    """
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    area = int(binary.sum())
    if not area:
        return 0.0
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(contours))
    canvas = np.zeros_like(binary)
    cv2.fillPoly(canvas, [hull], 1)
    hull_area = int((canvas | binary).sum())
    return area / hull_area

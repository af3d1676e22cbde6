"""Motion metrics from optical flow, no model: OpenS2V's ``motion_fb``/``motion_lk`` and the paper's smoothness.

* ``motion_fb``: mean Farneback flow magnitude between consecutive frames, in pixels at
  the video's ``motion_side`` (128 px short side) per frame: OpenS2V-Eval's motion amplitude.
* ``motion_lk``: mean displacement of Shi-Tomasi corners tracked with pyramidal Lucas-Kanade.
* ``motion_smoothness`` (paper, Wu et al. 2023 via VBench): VBench drops every odd frame,
  re-creates it from its neighbours with a frame-interpolation network (AMT) and scores
  ``(255 - MAE) / 255``. We keep the protocol and replace AMT by flow-based
  interpolation (Farneback flow between the neighbours, each warped half-way, averaged):
  it needs no weights and is exact on still and uniformly translating video, so the
  figure is comparable across our runs but not numerically equal to VBench's.

A video of one still frame scores ``motion_fb = motion_lk = 0`` and smoothness 1.
"""

from __future__ import annotations

from itertools import pairwise

import cv2
import numpy as np

from model.evaluate.base import Metric, NotScored
from model.evaluate.entries import Entry
from model.evaluate.video import VideoFrames

FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2, "flags": 0}


def gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def farneback(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Dense flow ``(H, W, 2)`` from ``first`` to ``second`` (grey uint8). Equal frames have no
    motion: exactly zero (Farneback's polynomial fit alone leaves ~1e-3 px of noise)."""
    if np.array_equal(first, second):
        return np.zeros((*first.shape[:2], 2), np.float32)
    return cv2.calcOpticalFlowFarneback(first, second, None, **FARNEBACK)


def motion_fb(frames: np.ndarray) -> float:
    greys = [gray(f) for f in frames]
    mags = [np.linalg.norm(farneback(a, b), axis=2).mean() for a, b in pairwise(greys)]
    return float(np.mean(mags)) if mags else 0.0


def motion_lk(frames: np.ndarray, corners: int = 200) -> float:
    greys = [gray(f) for f in frames]
    moves = []
    for a, b in pairwise(greys):
        if np.array_equal(a, b):
            moves.append(0.0)
            continue
        points = cv2.goodFeaturesToTrack(a, maxCorners=corners, qualityLevel=0.01, minDistance=5)
        if points is None:
            moves.append(0.0)
            continue
        moved, found, _ = cv2.calcOpticalFlowPyrLK(a, b, points, None)
        ok = found.reshape(-1) == 1
        moves.append(float(np.linalg.norm((moved - points).reshape(-1, 2)[ok], axis=1).mean()) if ok.any() else 0.0)
    return float(np.mean(moves)) if moves else 0.0


def _warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` sampled at ``x + flow(x)`` (backward warp)."""
    height, width = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def interpolate_middle(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The frame half-way between two RGB frames: each warped half the flow towards the middle."""
    forward = farneback(gray(before), gray(after))
    backward = farneback(gray(after), gray(before))
    from_before = _warp(before, 0.5 * backward).astype(np.float32)
    from_after = _warp(after, 0.5 * forward).astype(np.float32)
    return (from_before + from_after) / 2


def motion_smoothness(frames: np.ndarray) -> float:
    """VBench's protocol: re-create each odd frame from its even neighbours; ``(255 - MAE) / 255``."""
    errors = [np.abs(interpolate_middle(frames[i - 1], frames[i + 1]) - frames[i].astype(np.float32)).mean()
              for i in range(1, len(frames) - 1, 2)]
    if not errors:
        return 1.0
    return float((255.0 - np.mean(errors)) / 255.0)


class Motion(Metric):
    name = "motion"
    outputs = ("motion_fb", "motion_lk", "motion_smoothness")
    roles = ()
    uses_sampled_frames = False

    def score(self, entry: Entry, video: VideoFrames) -> dict[str, float]:
        if len(video.small) < 2:
            raise NotScored("too_few_frames", f"{len(video.small)} frame(s)")
        return {"motion_fb": motion_fb(video.small), "motion_lk": motion_lk(video.small),
                "motion_smoothness": motion_smoothness(video.small)}

"""Where exactly a shot boundary starts and ends: per-frame features and ramps.

A detector says *that* something changes near some frame; trimming needs *which frames*
belong to no shot. Two models cover what editors do:

* a dissolve or a fade to/from a colour mixes the old picture and the new one linearly,
  so projected on the line from a frame of the old shot to one of the new, frames form a
  ramp from 0 to 1 (``ramp_extent``); a hard cut is a step;
* a fade through black or white scales the picture's contrast down to a blank run and up
  again, so the ramp of the per-frame ``contrast`` into and out of the blank frames
  gives its ends, which camera motion hardly moves.

``History`` keeps the few features per frame these need, for a bounded window of frames.
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np

THUMB = (48, 27)  # width, height: TransNetV2's input size, and enough for histograms and ramps


# ---------------------------------------------------------------------------
# Per-frame features, kept for a bounded window of recent frames.
# ---------------------------------------------------------------------------

def thumbnail(bgr: np.ndarray) -> np.ndarray:
    """The 48x27 BGR frame every detector here works on (bilinear from the ~96 px scan frame,
    about a 2x2 average: 5x cheaper than an area resize at these odd sizes, same results)."""
    return cv2.resize(bgr, THUMB, interpolation=cv2.INTER_LINEAR)


def contrast(bgr: np.ndarray) -> float:
    """The picture's contrast: the largest per-channel standard deviation (0-255). A fade
    scales it linearly; a blank frame (black, white, any flat colour) has almost none."""
    return float(cv2.meanStdDev(bgr)[1].max())


def colour_histogram(thumb: np.ndarray) -> np.ndarray:
    """512-bin joint colour histogram (3 bits per channel), normalised to sum 1."""
    q = thumb >> 5
    index = (q[..., 0].astype(np.int32) << 6) | (q[..., 1].astype(np.int32) << 3) | q[..., 2]
    return np.bincount(index.ravel(), minlength=512).astype(np.float32) / index.size


class History:
    """Features of the last ``capacity`` frames by frame number (the only per-frame memory)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.first = 0  # frame number of thumbs[0]
        self.thumbs: deque[np.ndarray] = deque()
        self.contrast: deque[float] = deque()  # see ``contrast``
        self.blank: deque[bool] = deque()

    def add(self, thumb: np.ndarray, contrast: float, blank: bool) -> None:
        self.thumbs.append(thumb)
        self.contrast.append(contrast)
        self.blank.append(blank)
        while len(self.thumbs) > self.capacity:
            self.thumbs.popleft()
            self.contrast.popleft()
            self.blank.popleft()
            self.first += 1

    @property
    def end(self) -> int:
        return self.first + len(self.thumbs)

    def vectors(self, lo: int, hi: int) -> np.ndarray:
        lo, hi = max(lo, self.first), min(hi, self.end)
        return np.stack([self.thumbs[i - self.first] for i in range(lo, hi)]).reshape(hi - lo, -1).astype(np.float32)

    def contrasts(self, lo: int, hi: int) -> np.ndarray:
        lo, hi = max(lo, self.first), min(hi, self.end)
        return np.asarray([self.contrast[i - self.first] for i in range(lo, hi)], np.float32)[:, None]

    def blank_runs(self, lo: int, hi: int) -> list[tuple[int, int]]:
        lo, hi = max(lo, self.first), min(hi, self.end)
        runs, start = [], None
        for i in range(lo, hi):
            if self.blank[i - self.first]:
                start = i if start is None else start
            elif start is not None:
                runs.append((start, i))
                start = None
        if start is not None:
            runs.append((start, hi))
        return runs


# ---------------------------------------------------------------------------
# Extents: where exactly a transition starts and ends.
# ---------------------------------------------------------------------------

RAMP_LOW, RAMP_HIGH = 0.1, 0.9
# RMS change (0-255) between the frames before and after a dissolve under which its extent is
# uncertain (measured: shots of one place 8-21, shots of different places 25-60)
WEAK_CHANGE = 24.0


def ramp_extent(frames: np.ndarray, first: int, before: np.ndarray, after: np.ndarray) -> tuple[int, int]:
    """``[start, end)`` of the change from ``before`` to ``after`` inside ``frames`` (numbered from ``first``).

    Each frame is projected on the line from ``before`` to ``after`` (0: looks like the old
    shot, 1: like the new one). A dissolve or a fade is a ramp of that projection: the
    frames on either side of its first crossing of 0.5 down to 0.1 and up to 0.9, widened
    to where the line fitted through the ramp's middle (0.2-0.8) meets 0 and 1, so a slow
    start that noise hides still counts. Nothing in between: a hard cut at the crossing.
    """
    direction = after - before
    norm = float(direction @ direction)
    if norm < 1e-6:
        return first, first
    alpha = (frames - before) @ direction / norm
    past = np.flatnonzero(alpha >= 0.5)
    if not len(past):
        return first + len(alpha), first + len(alpha)
    cross = int(past[0])
    low = cross
    while low > 0 and alpha[low - 1] > RAMP_LOW:
        low -= 1
    high = cross
    while high < len(alpha) and alpha[high] < RAMP_HIGH:
        high += 1
    if high - low <= 1 and alpha[cross] >= RAMP_HIGH and (cross == 0 or alpha[cross - 1] <= RAMP_LOW):
        return first + cross, first + cross
    core = [i for i in range(low, high) if 0.2 <= alpha[i] <= 0.8]
    start, end = low, max(high, cross + 1)
    if len(core) >= 2:
        slope, offset = np.polyfit(np.asarray(core, np.float64), alpha[core].astype(np.float64), 1)
        if slope > 0:
            start = min(start, int(np.floor(-offset / slope)) + 1)
            end = max(end, int(np.ceil((1 - offset) / slope)))
    return first + max(start, 0), first + min(end, len(alpha))


def transition_extent(history: History, lo: int, hi: int, s0: int, e0: int, margin: int,
                      seen: tuple[int, int]) -> tuple[int, int]:
    """Extent of the transition near ``[s0, e0)`` using only frames in ``[lo, hi)``.

    With blank frames among the frames the detector compared (``seen``: a fade through black
    or white, a cut to black) the old shot fades *into* the blank frames and the new one *out of* them: a fade
    scales the picture's contrast, so the ramp is that of its standard deviation (``contrast``),
    which camera motion hardly moves. Otherwise the ramp runs from the old shot's frames to
    the new one's, with references ``margin`` frames outside the current estimate, refined
    until it settles (camera motion makes far references less alike).
    """
    lo, hi = max(lo, history.first), min(hi, history.end)
    if hi - lo < 2:
        return s0, e0
    runs = history.blank_runs(*seen)
    if runs:
        p, q = runs[0][0], runs[-1][1]
        lo, hi = min(lo, p), max(hi, q)
        flat = np.median(history.contrasts(p, q), axis=0)
        start, end = p, q
        # the ramps run through the blank frames: a dim shot fades under the blank level halfway
        if p - lo >= 2:
            before = history.contrasts(lo, q)
            level = lambda s: np.median(before[max(0, s - lo - 3 * margin):max(1, s - lo - margin)], axis=0)
            start = _settle(lambda s: min(p, ramp_extent(before, lo, level(s), flat)[0]), lo)
        if hi - q >= 2:
            after = history.contrasts(p, hi)
            level = lambda e: np.median(after[min(len(after) - 1, e - p + margin):e - p + 3 * margin], axis=0)
            end = _settle(lambda e: max(q, ramp_extent(after, p, flat, level(e))[1]), hi)
        return start, end
    def ramp(a: int, b: int) -> tuple[int, int]:
        frames = history.vectors(a, b)
        return ramp_extent(frames, a, frames[:margin].mean(0), frames[-margin:].mean(0))

    # widen the window until the ramp lies inside it (its references on stable frames) ...
    a, b = max(lo, s0 - 2 * margin), min(hi, e0 + 2 * margin)
    if b - a < 2:
        return s0, e0
    start, end = ramp(a, b)
    while (start < a + 2 * margin and a > lo) or (end > b - 2 * margin and b < hi):
        a = max(lo, a - 2 * margin) if start < a + 2 * margin else a
        b = min(hi, b + 2 * margin) if end > b - 2 * margin else b
        start, end = ramp(a, b)
    # ... then take references right next to it (camera motion makes far ones less alike);
    # keep the wider of the two: a transition frame in a clip costs more than a lost frame
    a, b = max(lo, start - 2 * margin), min(hi, end + 2 * margin)
    if b - a >= 2 * margin + 2:
        near = ramp(a, b)
        start, end = min(start, near[0]), max(end, near[1])
        frames = history.vectors(a, b)
        change = float(np.sqrt(np.mean((frames[-margin:].mean(0) - frames[:margin].mean(0)) ** 2)))
        if end > start and change < WEAK_CHANGE:
            # two shots of alike colours: the ramp's ends drown in camera motion; widen it
            pad = (end - start) // 2
            start, end = max(lo, start - pad), min(hi, end + pad)
    return start, end


def _settle(estimate, first_guess: int, rounds: int = 4) -> int:
    """Re-estimate a fade's far end with the shot's contrast measured just past the last
    estimate, until it stops moving (a shot's own contrast drifts as the camera moves)."""
    guess = estimate(first_guess)
    for _ in range(rounds):
        again = estimate(guess)
        if again == guess:
            break
        guess = again
    return guess

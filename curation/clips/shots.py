"""Shot boundaries as frame *ranges*, found while the video streams past (MAGREF Appendix B.1).

MAGREF trains on single-shot clips, so a clip must hold no frame of a transition: not the
cut, and not one frame of a fade or a dissolve. A detector that reports only a cut point is
not enough for gradual transitions: trimming needs every frame of the transition. So every
detector here ends in ``Boundary(start, end, kind)``: frames ``[start, end)`` belong to no
shot (``start == end`` is a hard cut before frame ``end``).

Two families feed the same stream (``BoundaryStream``):

* ``ClassicalBoundaries`` (CPU, costs a fraction of a decode): PySceneDetect's detectors
  (cut points) plus our *gradual* detector, the total-variation distance between colour
  histograms ``gradual_seconds`` before and after each frame (histograms ignore camera
  motion, which fools frame differences; a dissolve or a fade moves them far). Each
  candidate's extent comes from ``curation/clips/extents.py``: the ramp of the frames from
  the old shot's look to the new one's, or of the contrast into and out of blank frames.
* ``TransNetBoundaries`` (``curation/clips/transnet.py``): TransNetV2, whose second head
  marks every frame of a transition.

Blank frames (near-uniform: every colour channel's standard deviation under ``blank_max_std``)
are found the same way for both. A fade through black is fade out + blank run + fade in, one
``transition``; a blank run with no fade around it is ``blank``.

Streaming: each stream says up to which frame its output is final (``horizon``); nothing
it reports later starts before that frame. The scan closes clips up to the horizon, which
is what bounds its memory (``curation/clips/scan.py``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from curation.clips.extents import History, colour_histogram, contrast, thumbnail, transition_extent

CUT, TRANSITION, BLANK = "cut", "transition", "blank"
PYSCENEDETECT = ("adaptive", "content", "hash", "histogram")
GRADUAL = "gradual"
CLASSICAL = (*PYSCENEDETECT, GRADUAL)


@dataclass(frozen=True, order=True)
class Boundary:
    """Frames ``[start, end)`` belong to no shot; ``start == end``: a hard cut before ``end``."""

    start: int
    end: int
    kind: str  # CUT, TRANSITION or BLANK


@dataclass(frozen=True)
class Detection:
    """The detector settings a stream needs, in frames (from the config's seconds and the fps)."""

    classical: tuple[str, ...] = ("adaptive", GRADUAL)
    gradual_frames: int = 12  # K: histograms K frames before and after a frame are compared
    gradual_threshold: float = 0.3  # total-variation distance (0-1) that starts a candidate
    blank_max_std: float = 5.0
    max_transition_frames: int = 96  # a longer stretch of change is cut into pieces this long
    merge_gap: int = 4  # boundaries this close are one (the frames between would be trimmed anyway)
    adaptive_threshold: float = 3.0
    min_content_val: float = 15.0
    content_threshold: float = 27.0
    min_scene_frames: int = 8

    def pyscenedetect(self) -> list:
        """PySceneDetect detectors named in ``classical`` (cut points only)."""
        import scenedetect as sd

        made = []
        for name in self.classical:
            if name == "adaptive":
                made.append(sd.AdaptiveDetector(adaptive_threshold=self.adaptive_threshold,
                                                min_content_val=self.min_content_val,
                                                min_scene_len=self.min_scene_frames))
            elif name == "content":
                made.append(sd.ContentDetector(threshold=self.content_threshold, min_scene_len=self.min_scene_frames))
            elif name == "hash":
                made.append(sd.HashDetector(min_scene_len=self.min_scene_frames))
            elif name == "histogram":
                made.append(sd.HistogramDetector(min_scene_len=self.min_scene_frames))
        return made


# ---------------------------------------------------------------------------
# The stream: frames in, final boundaries out.
# ---------------------------------------------------------------------------

class BoundaryStream:
    """Shared by every detector: blank runs, merging, and the horizon.

    Subclasses look at each frame in ``_detect``, add candidate ranges with ``_candidate``,
    settle what is open in ``_flush`` and say in ``_open_from`` how far back a candidate
    they have not added yet may start.
    """

    def __init__(self, detection: Detection, capacity: int):
        self.detection = detection
        self.history = History(capacity)
        self.frames = 0  # frames pushed so far
        self.finished = False
        self._candidates: list[tuple[int, int]] = []  # frame ranges, not merged yet
        self._blank_from: int | None = None  # first frame of the blank run going on
        self._published = 0  # nothing reported later starts before this

    def _detect(self, n: int, bgr: np.ndarray, thumb: np.ndarray) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        pass

    def _open_from(self) -> int:
        return self.frames

    def push(self, n: int, bgr: np.ndarray) -> None:
        """The next frame (``n`` counts from 0), as the small BGR image the scan makes."""
        thumb, level = thumbnail(bgr), contrast(bgr)
        blank = level < self.detection.blank_max_std
        self.history.add(thumb, level, blank)
        self.frames = n + 1
        if blank and self._blank_from is None:
            self._blank_from = n
        elif not blank and self._blank_from is not None:
            self._candidate(self._blank_from, n)  # a flash frame, a cut to black and back
            self._blank_from = None
        self._detect(n, bgr, thumb)

    def finish(self) -> None:
        if self._blank_from is not None:
            self._candidate(self._blank_from, self.frames)
            self._blank_from = None
        self._flush()
        self.finished = True

    @property
    def horizon(self) -> int:
        """Every boundary not reported yet starts at or after this frame."""
        if self.finished:
            return self.frames
        limit = self._open_from()
        if self._blank_from is not None:
            limit = min(limit, self._blank_from)
        return max(self._published, min(limit, self.frames))

    def pop(self) -> list[Boundary]:
        """Boundaries that are final now, in order, never overlapping."""
        if not self._candidates:
            return []
        horizon = self.horizon
        out, keep = [], []
        for start, end in _merge(sorted(self._candidates), self.detection.merge_gap):
            if self.finished or end + self.detection.merge_gap < horizon:
                start = max(start, self._published)
                out.append(Boundary(start, max(start, end), self._kind(start, end)))
                self._published = out[-1].end
            else:
                keep.append((start, end))
        self._candidates = keep
        return out

    def _kind(self, start: int, end: int) -> str:
        """``cut`` (no frame); ``blank`` when it starts and ends on blank frames (a cut to black
        and back, a black flash, black with a few frames of picture between); else
        ``transition``: it starts or ends on a ramp (a fade, a dissolve, fade out + black + fade in)."""
        if end <= start:
            return CUT
        runs = self.history.blank_runs(start, end)
        return BLANK if runs and runs[0][0] == start and runs[-1][1] == end else TRANSITION

    def _candidate(self, start: int, end: int) -> None:
        if end >= self._published:  # what is published is final; a range inside it adds nothing
            self._candidates.append((max(start, self._published), end))


def _merge(ranges: Iterable[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for start, end in ranges:
        if out and start <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


# a thumbnail that differs from the one before by this much RMS (0-255), and this many times
# more than the region's typical frame-to-frame change, starts a new shot
STEP_MIN, STEP_RATIO = 12.0, 4.0


@dataclass
class _Pending:
    """A candidate waiting for its frames: estimate its extent near ``[s0, e0)`` from frames
    ``[lo, hi)`` once frame ``ready`` has arrived; ``seen``: the frames its detector compared."""

    ready: int
    s0: int
    e0: int
    lo: int
    hi: int
    cut: bool  # a PySceneDetect cut point (else a histogram region)
    seen: tuple[int, int]


class ClassicalBoundaries(BoundaryStream):
    """PySceneDetect's cut detectors and the lagged colour-histogram detector, on CPU."""

    def __init__(self, detection: Detection, fps: float):
        from scenedetect.common import FrameTimecode

        k = detection.gradual_frames
        super().__init__(detection, capacity=2 * detection.max_transition_frames + 6 * k + 16)
        self._timecode = lambda n: FrameTimecode(n, fps=float(fps))
        self.detectors = detection.pyscenedetect()
        self.gradual = GRADUAL in detection.classical
        self.k = k
        self.margin = max(2, k // 4)
        self._hists: deque[np.ndarray] = deque(maxlen=2 * k + 1)
        self._region: list[int] | None = None  # [first, last] frame whose histogram change is high
        self._waiting: list[_Pending] = []  # candidates waiting for the frames their extent needs
        self._recent: deque[tuple[int, int]] = deque(maxlen=8)  # extents of the last regions
        self._cut_lag = detection.min_scene_frames + 4  # PySceneDetect reports a cut this late at most
        self._input_done = False

    def _detect(self, n: int, bgr: np.ndarray, thumb: np.ndarray) -> None:
        for detector in self.detectors:
            for cut in detector.process_frame(self._timecode(n), bgr):
                self._wait_for(cut.frame_num)
        if self.gradual:
            self._hists.append(colour_histogram(thumb))
            if len(self._hists) == self._hists.maxlen:
                t = n - self.k
                change = 0.5 * float(np.abs(self._hists[-1] - self._hists[0]).sum())
                if change > self.detection.gradual_threshold:
                    self._region = [t, t] if self._region is None else [self._region[0], t]
                    if t - self._region[0] > self.detection.max_transition_frames + 2 * self.k:
                        self._candidate(self._region[0] + self.k, t)  # strobe, rapid cuts: one transition
                        self._region = None
                elif self._region is not None and t - self._region[1] > self.k:
                    self._close_region()  # k frames under the threshold: a change near it flickers
        self._estimate()

    def _wait_for(self, cut: int) -> None:
        self._waiting.append(self._cut_point(cut))

    def _close_region(self) -> None:
        """A stretch of frames whose histograms differ from those 2k frames away: the change
        lies within the frames compared, ``[r0 - k, r1 + k]``; a slow dissolve between shots
        of alike colours crosses the threshold late, so its ramp may start up to k earlier."""
        r0, r1 = self._region
        self._region = None
        k, centre = self.k, (r0 + r1) // 2
        s0, e0 = min(r0 + k, centre), max(r1 - k + 1, centre)
        # the first change looked at is at frame k: a region starting there may have started
        # before it (a fade in from black at the start of the video)
        lo = 0 if r0 <= k else max(0, r0 - 2 * k)
        self._waiting.append(_Pending(r1 + 2 * k + 1, s0, e0, lo, r1 + 2 * k + 2, False, (r0 - k, r1 + k + 1)))

    def _estimate(self) -> None:
        """Extents of the candidates whose frames have all arrived. A cut point that a histogram
        region covers is decided with the region: if the frames around it step from one shot
        to the next (a hard cut between shots of alike colours, whose histogram change looks
        gradual), the cut stands; otherwise the region's ramp gives the extent."""
        still = []
        regions = [(p.lo, p.hi) for p in self._waiting if not p.cut]
        if self._region is not None:
            regions.append((self._region[0] - self.k, self.frames))
        near = self.detection.merge_gap
        consumed: set[int] = set()
        for pending in sorted(self._waiting, key=lambda p: p.cut):  # regions first
            if id(pending) in consumed:
                continue
            if pending.ready > self.frames - 1 and not self._input_done:
                still.append(pending)
                continue
            if pending.cut and any(a - near <= pending.s0 <= b + near for a, b in regions):
                still.append(pending)  # a region not estimated yet covers it: decided with the region
                continue
            if pending.cut and any(a - near <= pending.s0 <= b + near for a, b in self._recent):
                continue  # the region around it was decided already
            if not pending.cut:
                inside = [p for p in self._waiting if p.cut and pending.seen[0] <= p.s0 < pending.seen[1]]
                consumed.update(id(p) for p in inside)
                inside += [self._cut_point(c) for c in self._steps(*pending.seen)]
                cuts = sorted({extent for extent in map(self._extent, inside) if extent[1] - extent[0] <= 2})
                regions.remove((pending.lo, pending.hi))
                if cuts and not self.history.blank_runs(*pending.seen):
                    for start, end in cuts:
                        self._candidate(start, end)
                    self._recent.append((pending.s0, pending.e0))
                    continue
            start, end = self._extent(pending)
            if not pending.cut:
                self._recent.append((start, end))
            self._candidate(start, end)
        self._waiting = [p for p in still if id(p) not in consumed]

    def _steps(self, lo: int, hi: int) -> list[int]:
        """Frames that differ from the frame before far more than their neighbours do: the
        hard cuts inside a histogram region (two cuts a second apart make one region)."""
        frames = self.history.vectors(lo, hi)
        if len(frames) < 3:
            return []
        jumps = np.sqrt(np.mean(np.diff(frames, axis=0) ** 2, axis=1))
        floor = max(STEP_MIN, STEP_RATIO * float(np.median(jumps)))
        first = max(lo, self.history.first)
        return [first + 1 + int(i) for i in np.flatnonzero(jumps > floor)]

    def _cut_point(self, cut: int) -> _Pending:
        k = self.k
        return _Pending(cut + 2 * k, cut, cut, cut - 2 * k, cut + 2 * k + 1, True, (cut - k, cut + k))

    def _extent(self, pending: _Pending) -> tuple[int, int]:
        return transition_extent(self.history, max(pending.lo, self._published), min(self.frames, pending.hi),
                                 pending.s0, pending.e0, self.margin, pending.seen)

    def _flush(self) -> None:
        for detector in self.detectors:
            for cut in detector.post_process(self._timecode(max(self.frames - 1, 0))):
                self._wait_for(cut.frame_num)
        if self._region is not None:
            self._close_region()
        self._input_done = True
        self._estimate()

    def _open_from(self) -> int:
        limit = self.frames - self.k - self._cut_lag - 2 * self.k
        if self._region is not None:
            limit = min(limit, self._region[0] - 2 * self.k)
        for pending in self._waiting:
            limit = min(limit, pending.lo)
        return limit

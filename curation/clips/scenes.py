"""Scene splitting (MAGREF Appendix B.1): one video in, candidate clips out.

MAGREF trains on single-shot clips: a clip that holds a cut, one frame of a fade or a
dissolve, or blank frames teaches the model something no shot does. So:

* shot boundaries are frame *ranges* (``curation/clips/shots.py``): a hard cut, every frame
  of a gradual transition, a run of blank frames;
* the clip policy (``ClipPolicy``) drops ``trim_frames`` more on each side of every
  boundary, makes a ``transition`` row of each gradual transition (a fade out, black frames
  and a fade in are one) and a ``blank`` row of each blank run (blank runs with only
  stretches shorter than ``min_seconds`` between them are one: a mostly blank scene is
  ``blank``), and turns the rest into clips: ``too_short`` under ``min_seconds``, windows of
  ``max_seconds`` in long scenes. Every frame range it looked at is a row;
* the scan (``curation/clips/scan.py``) decodes the video once and closes clips as the
  boundary stream makes them final, so memory does not grow with the video's length.

Detectors (``scenes.detector``): ``classical`` (PySceneDetect's detectors named in
``classical`` plus our lagged colour-histogram ``gradual`` detector; CPU, a fraction of a
decode) or ``transnetv2`` (learned, on an actor, the GPU's default); ``auto`` picks
TransNetV2 when the job uses GPUs (--gpus). The README's stage 1 table gives the measurements
behind the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from curation.clips.shots import BLANK, CLASSICAL, TRANSITION, Boundary, ClassicalBoundaries, Detection
from curation.clips.transnet import TransNetBoundaries
from curation.operator import ActorPool, TaskPool, setting
from schemas.tables import KEPT

TOO_SHORT = "too_short"
AUTO, CLASSICAL_DETECTOR, TRANSNET = "auto", "classical", "transnetv2"
DETECTORS = (AUTO, CLASSICAL_DETECTOR, TRANSNET)
WINDOWS = ("fixed", "even")


@dataclass
class ScenesConfig:
    """Shot boundaries and the clip policy. PySceneDetect thresholds are in its own units."""

    detector: str = setting("auto", help='"auto": transnetv2 when the job uses GPUs (--gpus), else "classical"')
    classical: list[str] = setting(factory=lambda: ["adaptive", "gradual"], help=
        "classical detectors, unioned: PySceneDetect's adaptive/content/hash/histogram (cut points) and "
        '"gradual" (colour histograms gradual_seconds apart: fades, dissolves)')
    gradual_seconds: float = setting(0.5, help="histograms this far before and after each frame are compared")
    gradual_threshold: float = setting(0.3, help="their total-variation distance (0-1) that marks a transition")
    blank_max_std: float = setting(5.0, help="a frame whose every colour channel varies less (std, 0-255) is blank")
    max_transition_seconds: float = setting(4.0, help="longer stretches of change are cut into transitions this long")
    transnet_threshold: float = setting(0.5, help="TransNetV2: a transition holds a frame scored above this")
    transnet_extent: float = setting(0.05, help="... and runs over every neighbouring frame scored above this")
    transnet_batch: int = setting(4, help="TransNetV2: 100-frame windows per forward")
    adaptive_threshold: float = setting(3.0, help="AdaptiveDetector: a frame's change over its neighbours' average")
    min_content_val: float = setting(15.0, help="AdaptiveDetector: the least absolute change that can be a cut")
    content_threshold: float = setting(27.0, help="ContentDetector's threshold (HSV change, 0-255)")
    min_scene_frames: int = setting(8, help="PySceneDetect's own minimum distance between cuts")
    detect_width: int = setting(96, help="frames shrink to about this width for detection")
    min_seconds: float = setting(2.0, help="shorter scenes become too_short rows")
    max_seconds: float = setting(10.0, help="longer scenes are cut into windows")
    trim_frames: int = setting(2, help="dropped on each side of every boundary")
    window: str = setting("fixed", help=
        'long scenes: "fixed" windows of max_seconds, or "even" (the last two balanced)')
    strict_decode: bool = setting(True, help="a decode error makes the video an error row")
    pool: TaskPool = setting(factory=lambda: TaskPool(batch_size=1, num_cpus=0.5), help=
        "classical: one video per Ray task (the scan decodes the whole video)")
    transnet_pool: ActorPool = setting(
        factory=lambda: ActorPool(actors=2, batch_size=1, num_cpus=1.0,
                                                                       num_gpus=0.25), help=
        "transnetv2: actors that keep the model loaded (a GPU share each where the job uses GPUs)")

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"scenes.detector must be one of {DETECTORS}, got {self.detector!r}")
        unknown = [name for name in self.classical if name not in CLASSICAL]
        if unknown or not self.classical:
            raise ValueError(f"scenes.classical must name some of {CLASSICAL}, got {self.classical!r}")
        if self.window not in WINDOWS:
            raise ValueError(f"scenes.window must be one of {WINDOWS}, got {self.window!r}")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 0 < min_seconds <= max_seconds, got {self.min_seconds}, {self.max_seconds}")
        if self.trim_frames < 0 or self.min_scene_frames < 1 or self.detect_width < 16:
            raise ValueError("trim_frames must be >= 0, min_scene_frames >= 1, detect_width >= 16")
        if self.gradual_seconds <= 0 or self.transnet_batch < 1:
            raise ValueError("gradual_seconds must be > 0 and transnet_batch >= 1")

    def resolved(self, gpus: bool) -> "ScenesConfig":
        """``auto`` made concrete: TransNetV2 when GPUs exist, the classical ensemble otherwise."""
        if self.detector != AUTO:
            return self
        return replace(self, detector=TRANSNET if gpus else CLASSICAL_DETECTOR)

    def step_pool(self) -> TaskPool | ActorPool:
        """The pool the splitter runs on: actors hold TransNetV2, plain tasks run the classical scan."""
        return self.transnet_pool if self.detector == TRANSNET else self.pool

    def detection(self, fps: float) -> Detection:
        return Detection(classical=tuple(self.classical), gradual_frames=max(2, int(round(self.gradual_seconds * fps))),
                         gradual_threshold=self.gradual_threshold, blank_max_std=self.blank_max_std,
                         max_transition_frames=max(1, int(round(self.max_transition_seconds * fps))),
                         merge_gap=2 * self.trim_frames, adaptive_threshold=self.adaptive_threshold,
                         min_content_val=self.min_content_val, content_threshold=self.content_threshold,
                         min_scene_frames=self.min_scene_frames)

    def boundary_stream(self, fps: float, shot_model: Any = None):
        if self.detector == TRANSNET:
            if shot_model is None:
                raise ValueError("scenes.detector=transnetv2 needs the shot_boundaries model loaded")
            return TransNetBoundaries(self.detection(fps), shot_model, self.transnet_batch,
                                      self.transnet_threshold, self.transnet_extent)
        return ClassicalBoundaries(self.detection(fps), fps)


# ---------------------------------------------------------------------------
# The clip policy: boundaries in, rows out, as soon as they are final.
# ---------------------------------------------------------------------------

class ClipPolicy:
    """Turns a stream of final boundaries into ``(start, end_exclusive, status)`` rows.

    ``add(boundaries, horizon)`` takes boundaries in order and the frame before which the
    stream will add none; it returns the rows that can no longer change: the scene before
    each boundary, and ``max_seconds`` windows of a long scene the horizon has passed
    (``fixed``: as soon as a window ends; ``even``: once a full window more is known, so
    the last two windows can be balanced and none is shorter than half a window). A blank
    row is held until the scene after it proves at least ``min_seconds`` long, so blank runs
    with only short stretches between them become one ``blank`` row.
    """

    def __init__(self, config: ScenesConfig, fps: float):
        self.min_len = max(1, int(round(config.min_seconds * fps)))
        self.max_len = max(self.min_len, int(round(config.max_seconds * fps)))
        self.trim, self.even = config.trim_frames, config.window == "even"
        self.start = 0  # first frame of the open scene (its trim not yet applied)
        self.after_boundary = False  # the open scene starts at a boundary: trim its start
        self.held: list[int] | None = None  # [start, end] of a blank row not yet emitted

    @property
    def open_from(self) -> int:
        """The first frame of any row not emitted yet."""
        return self.held[0] if self.held is not None else self.start

    def _first(self) -> int:
        return self.start + (self.trim if self.after_boundary else 0)

    def add(self, boundaries: list[Boundary], horizon: int) -> list[tuple[int, int, str]]:
        rows: list[tuple[int, int, str]] = []
        for boundary in boundaries:
            rows += self._boundary(boundary)
        return rows + self._advance(horizon)

    def _boundary(self, b: Boundary) -> list[tuple[int, int, str]]:
        first, last = self._first(), b.start - self.trim
        rows = []
        if b.kind == BLANK and self.held is not None and last - first < self.min_len:
            self.held[1] = b.end  # a short stretch between blank runs: one blank row
        else:
            rows += self._flush()
            rows += self._windows(first, last)
            if b.kind == TRANSITION:
                rows.append((b.start, b.end, TRANSITION))
            elif b.kind == BLANK:
                self.held = [b.start, b.end]
        self.start, self.after_boundary = b.end, True
        return rows

    def _advance(self, horizon: int) -> list[tuple[int, int, str]]:
        first = self._first()
        rows = []
        if self.held is not None and horizon >= first + self.min_len + self.trim:
            rows += self._flush()
        reach = 2 * self.max_len if self.even else self.max_len
        while first + reach + self.trim <= horizon:
            rows += self._flush()
            rows.append((first, first + self.max_len, KEPT))
            first = first + self.max_len
            self.start, self.after_boundary = first, False
        return rows

    def finish(self, num_frames: int) -> list[tuple[int, int, str]]:
        return self._flush() + self._windows(self._first(), num_frames)

    def _flush(self) -> list[tuple[int, int, str]]:
        held, self.held = self.held, None
        return [(held[0], held[1], BLANK)] if held is not None else []

    def _windows(self, first: int, last: int) -> list[tuple[int, int, str]]:
        if last <= first:
            return []  # a flash shorter than the trims: nothing of it is usable or worth a row
        edges = [first]
        while last - edges[-1] > (2 if self.even else 1) * self.max_len:
            edges.append(edges[-1] + self.max_len)
        if self.even and last - edges[-1] > self.max_len:
            edges.append((edges[-1] + last) // 2)
        edges.append(last)
        return [(a, b, KEPT if b - a >= self.min_len else TOO_SHORT) for a, b in zip(edges[:-1], edges[1:])]

"""Ranking and choosing each identity's reference faces (Appendix B.3).

Ranking: "we rank the detected faces by two criteria: detection confidence and pose
quality". One recorded score joins them: ``confidence * frontalness``, where
frontalness is ``cos(yaw) * cos(pitch)`` (1 for a face looking into the camera,
0.5 at 60 degrees of yaw; roll turns the face in the image plane and hides nothing,
so it does not count). A product, so a sure detection of a profile and an unsure
detection of a frontal face both rank low.

Selection: "we uniformly sample 10 faces for each unique identity, avoiding the risk
of over-representing any specific pose". The identity's yaw range is cut into
``count`` equal bins; the best-ranked face of each non-empty bin is taken, then the
second best of each bin, and so on until ``count`` faces are chosen. A clip that
mostly shows a face from the front therefore still contributes its few turned views,
and each chosen face is the best of its pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.operator import setting


@dataclass
class FaceSelection:
    """``faces.select.*``: how many references per identity ``spread_over_yaw`` picks."""

    per_identity: int = setting(10, help="references chosen per identity, spread over the yaw range (the paper's 10)")
    from_neighbours: bool = setting(True, help="faces found in the neighbouring segments may be chosen too")

    def __post_init__(self) -> None:
        if self.per_identity < 1:
            raise ValueError(f"select.per_identity must be >= 1, got {self.per_identity}")


def frontalness(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """cos(yaw) * cos(pitch), clipped at 0 (degrees in)."""
    value = np.cos(np.radians(np.asarray(yaw, np.float64))) * np.cos(np.radians(np.asarray(pitch, np.float64)))
    return np.clip(value, 0.0, 1.0)


def rank_score(confidence: np.ndarray, yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """The ranking score: detection confidence (in [0, 1]) times frontalness."""
    return np.clip(np.asarray(confidence, np.float64), 0.0, 1.0) * frontalness(yaw, pitch)


def ranks(scores: np.ndarray) -> np.ndarray:
    """0 for the best score, 1 for the next, ...; ties keep row order (stable)."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    result = np.empty(len(order), np.int64)
    result[order] = np.arange(len(order))
    return result


def spread_over_yaw(yaw: np.ndarray, scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of at most ``count`` faces spread over the yaw range, best-ranked per bin first."""
    yaw = np.asarray(yaw, np.float64)
    if len(yaw) <= count:
        return np.arange(len(yaw))
    low, high = float(yaw.min()), float(yaw.max())
    if high - low < 1e-9:
        return np.sort(np.argsort(-np.asarray(scores, np.float64), kind="stable")[:count])
    bins = np.minimum(((yaw - low) / (high - low) * count).astype(np.int64), count - 1)
    rank = ranks(scores)
    queues = [sorted(np.flatnonzero(bins == b), key=lambda i: rank[i]) for b in range(count)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < count:
        for queue in queues:
            if depth < len(queue) and len(chosen) < count:
                chosen.append(int(queue[depth]))
        depth += 1
    return np.sort(np.asarray(chosen, np.int64))

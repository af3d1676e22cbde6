"""Clip quality (MAGREF Appendix B.1): motion amplitude and aesthetic score, then filters.

Motion: dense optical flow (OpenCV's DIS, or Farneback) on a few frame pairs per clip, at a
fixed working size (short side ``motion_short_side``). The score is the mean flow
magnitude as a percentage of the frame diagonal per second, so it depends neither on
the source resolution nor on its frame rate. A still shot scores ~0; a subject that
crosses a quarter of the frame in a second scores a few units; a whip pan 50+.

Aesthetic: the LAION "improved aesthetic predictor" design
(github.com/christophschuhmann/improved-aesthetic-predictor): the L2-normalised CLIP
ViT-L/14 image embedding (768-d) goes through a 5-layer MLP trained on SAC + LOGOS +
AVA ratings (scale 1-10). The CLIP part is transformers' ``CLIPVisionModelWithProjection``
(``openai/clip-vit-large-patch14``); the head is read from safetensors. The released
head is a PyTorch ``.pth`` (``sac+logos+ava1-l14-linearMSE.pth`` in that repo); convert
it once with ``python -m curation.clips.quality convert-head IN.pth OUT.safetensors``. The
clip's score is the mean over ``aesthetic_frames`` frames.

The scan (``curation/clips/scan.py``) measures motion as each clip closes and packs the
aesthetic frames; nothing is decoded twice.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from curation.envelope import put_column, run_isolated
from curation.frames import FRAMES, decode_frame_sets, drop_frames
from curation.models import ModelSourceError, default_dtype, load
from curation.operator import ActorPool, setting
from schemas.tables import CLIPS, KEPT

MOTION = "motion"
AESTHETIC = "aesthetic"
HEAD_FILE = "aesthetic_head.safetensors"
HEAD_ENV = "MAGREF_AESTHETIC_HEAD"


@dataclass
class QualityConfig:
    """Filter thresholds and how many frames each score looks at."""

    motion_method: str = setting("dis", help='OpenCV dense flow: "dis" (DIS, fast preset; ~1 ms a pair) or "farneback"')
    motion_min: float = setting(0.8, help=
        "% of the frame diagonal per second; below: a still shot (camera-like media: a locked-off camera with "
        "film grain scores 0.15-1.1, most under 0.7; the slowest pan, 1% of the width a second, 0.8-1.5)")
    motion_max: float = setting(40.0, help=
        "above: shaky or whip-panning footage (a pan of the full width a second scores ~80)")
    aesthetic_min: float = setting(4.5, help="LAION scale 1-10; 4.5-5 is the usual cut for video corpora")
    motion_pairs: int = setting(4, help="frame pairs per clip whose optical flow is averaged")
    motion_gap_s: float = setting(0.125, help="time between the two frames of a pair")
    motion_grid_s: float = setting(0.5, help="pair starts are kept every this many seconds during the scan")
    motion_short_side: int = setting(128, help="flow is computed at this size, so scores do not depend on resolution")
    aesthetic_frames: int = setting(3, help="frames per clip whose CLIP scores are averaged")
    aesthetic_grid_s: float = setting(1.0, help="aesthetic frames are kept every this many seconds during the scan")
    aesthetic_short_side: int = setting(224, help="CLIP's input size; its processor centre-crops (never upscaled here)")
    aesthetic_jpeg_quality: int = setting(90, help=
        "aesthetic frames travel to the scorer as JPEG of this quality (0: raw); CLIP's score moves by less "
        "than its frame-to-frame spread, and a video's clips stay ~10-30x smaller in their Ray block")
    pool: ActorPool = setting(factory=lambda: ActorPool(actors=1, batch_size=32, num_cpus=0.5, num_gpus=0.25), help=
        "clips per call; all their aesthetic frames go through CLIP in one forward")

    def __post_init__(self) -> None:
        if self.motion_method not in ("dis", "farneback"):
            raise ValueError(f"motion_method must be 'dis' or 'farneback', got {self.motion_method!r}")
        if self.motion_min > self.motion_max:
            raise ValueError(f"motion_min {self.motion_min} > motion_max {self.motion_max}")
        if min(self.motion_pairs, self.aesthetic_frames) < 1:
            raise ValueError("motion_pairs and aesthetic_frames must be >= 1")
        if min(self.motion_gap_s, self.motion_grid_s, self.aesthetic_grid_s) <= 0:
            raise ValueError("motion_gap_s, motion_grid_s and aesthetic_grid_s must be > 0")
        if self.motion_short_side < 16 or self.aesthetic_short_side < 16:
            raise ValueError("motion_short_side and aesthetic_short_side must be >= 16")
        if not 0 <= self.aesthetic_jpeg_quality <= 100:
            raise ValueError(f"aesthetic_jpeg_quality must be 0 (raw) to 100, got {self.aesthetic_jpeg_quality}")

    # What the scan keeps of a decoded frame, so the scorer sees the same pixels always.
    def motion_frame(self, luma: np.ndarray) -> np.ndarray:
        height, width = luma.shape[:2]
        scale = self.motion_short_side / min(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return cv2.resize(luma, size, interpolation=cv2.INTER_AREA)

    def aesthetic_frame(self, frame: Any) -> np.ndarray:
        """An ``av.VideoFrame`` scaled in swscale to short side ``aesthetic_short_side`` (never up), RGB."""
        scale = min(1.0, self.aesthetic_short_side / min(frame.width, frame.height))
        return frame.to_ndarray(width=max(2, round(frame.width * scale)), height=max(2, round(frame.height * scale)),
                                format="rgb24")


def dense_flow(first: np.ndarray, second: np.ndarray, method: str = "dis") -> np.ndarray:
    """(H, W, 2) optical flow between two grey frames: OpenCV's DIS (fast preset) or Farneback."""
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(first, second, None, pyr_scale=0.5, levels=3, winsize=15,
                                            iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST).calc(first, second, None)


def pair_motion(first: np.ndarray, second: np.ndarray, gap_s: float, method: str = "dis") -> float:
    """Mean optical-flow magnitude between two grey frames ``gap_s`` apart, in % of diagonal per second.

    The clip's motion score is the mean over its pairs (``curation/clips/scan.py`` picks them
    by presentation time, so ``gap_s`` is each pair's own, right on variable frame rates too).
    """
    diagonal = math.hypot(first.shape[-1], first.shape[-2])
    magnitude = float(np.linalg.norm(dense_flow(first, second, method), axis=-1).mean())
    return 100.0 * magnitude / diagonal / max(gap_s, 1e-6)


# ---------------------------------------------------------------------------
# The aesthetic predictor: CLIP ViT-L/14 image embedding -> LAION MLP head.
# ---------------------------------------------------------------------------

def aesthetic_head(embed_dim: int = 768):
    """The LAION improved-aesthetic MLP. Its layer indices match the released state dict
    (``layers.0/2/4/6/7``); the original has no activations between the linear layers."""
    from torch import nn

    class AestheticHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(embed_dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

        def forward(self, embeds):
            return self.layers(embeds)

    return AestheticHead()


@dataclass
class AestheticPredictor:
    vision: Any  # transformers.CLIPVisionModelWithProjection
    processor: Any  # transformers.CLIPImageProcessor
    head: Any
    device: str
    dtype: Any

    def score(self, images: list[np.ndarray], batch: int | None = None) -> np.ndarray:
        """One score per RGB image, ``batch`` images per forward (default: all at once)."""
        import torch

        out = []
        batch = batch or max(len(images), 1)
        for i in range(0, len(images), batch):
            pixels = self.processor(images=list(images[i:i + batch]), return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                embeds = self.vision(pixel_values=pixels.to(self.device, self.dtype)).image_embeds
                embeds = embeds / embeds.norm(dim=-1, keepdim=True)
                out.append(self.head(embeds.float()).squeeze(-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def head_path(source: str) -> str:
    """Where the head's safetensors are: in a local model folder, else ``$MAGREF_AESTHETIC_HEAD``."""
    if os.path.isdir(os.path.expanduser(source)):
        local = os.path.join(os.path.expanduser(source), HEAD_FILE)
        if os.path.exists(local):
            return local
    path = os.path.expanduser(os.environ.get(HEAD_ENV, f"~/.cache/magref/{HEAD_FILE}"))
    if not os.path.exists(path):
        raise ModelSourceError(
            f"aesthetic head not found (looked in {source!r}/{HEAD_FILE} and {path}). Download "
            "sac+logos+ava1-l14-linearMSE.pth from github.com/christophschuhmann/improved-aesthetic-predictor, "
            f"run `python -m curation.clips.quality convert-head THAT.pth {path}`, or set {HEAD_ENV}.")
    return path


def load_aesthetic(source: str, device: str, dtype: Any = None) -> AestheticPredictor:
    """CLIP from ``source`` (hub id or folder), the head from ``head_path(source)``."""
    from safetensors.torch import load_file
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    dtype = default_dtype(device, dtype)
    vision = CLIPVisionModelWithProjection.from_pretrained(source, dtype=dtype).to(device).eval()
    head = aesthetic_head(vision.config.projection_dim)
    head.load_state_dict(load_file(head_path(source)))
    return AestheticPredictor(vision, CLIPImageProcessor.from_pretrained(source), head.to(device).eval(),
                              device, dtype)


def tiny_aesthetic(device: str) -> AestheticPredictor:
    """The same classes from a tiny random config; the head's output is centred near 5
    (the LAION scale's middle), so default thresholds neither keep nor drop everything."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=224, patch_size=32, projection_dim=768)
    vision = CLIPVisionModelWithProjection(config).to(device).eval()
    head = aesthetic_head(768)
    with torch.no_grad():
        head.layers[7].weight.mul_(0.05)
        head.layers[7].bias.fill_(5.5)
    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    return AestheticPredictor(vision, processor, head.to(device).eval(), device, torch.float32)


def convert_head(pth: str, out: str) -> None:
    """The released ``.pth`` head (a plain state dict) to safetensors, loaded without pickle code."""
    import torch
    from safetensors.torch import save_file

    state = torch.load(pth, map_location="cpu", weights_only=True)
    head = aesthetic_head(state["layers.0.weight"].shape[1])
    head.load_state_dict(state)  # fails loudly if the file is not that head
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, out)


# ---------------------------------------------------------------------------
# The operator.
# ---------------------------------------------------------------------------

class ClipScorer:
    """Stage 1, step 2: motion and aesthetic scores for live clips, then the filters.

    Every scored clip keeps both scores; its status is ``kept`` or the first filter it
    failed (``motion``, then ``aesthetic``), so thresholds can be re-tuned from the table.
    The motion score comes from the scan (it needs no model); the aesthetic frames come in the
    ``FRAMES`` column (set ``aesthetic``), which this step drops.
    """

    def __init__(self, config: QualityConfig, models: Any = None, device: str | None = None):
        self.config = config
        self.predictor = load(AESTHETIC, models, device=device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        result = run_isolated(batch, self._score, CLIPS)
        return drop_frames(result)

    def _score(self, live: pa.Table) -> pa.Table:
        motions = live.column("motion").to_pylist()  # the scan measured it as each clip closed
        looks: list[np.ndarray] = []
        owners: list[int] = []
        packed = live.column(FRAMES).to_pylist() if FRAMES in live.column_names else [None] * live.num_rows
        for row, blob in enumerate(packed):
            sets = decode_frame_sets(blob) if blob else {}
            if AESTHETIC in sets:
                looks.extend(sets[AESTHETIC].images)
                owners.extend([row] * len(sets[AESTHETIC]))
        scores = self.predictor.score(looks) if looks else np.zeros(0)
        aesthetics: list[float | None] = []
        for row in range(live.num_rows):
            mine = scores[np.asarray(owners) == row] if owners else []
            aesthetics.append(float(np.mean(mine)) if len(mine) else None)
        statuses = [self.verdict(m, a, s) for m, a, s in zip(motions, aesthetics, live.column("status").to_pylist())]
        live = put_column(live, "motion", pa.array(motions, pa.float32()))
        live = put_column(live, "aesthetic", pa.array(aesthetics, pa.float32()))
        return put_column(live, "status", pa.array(statuses, pa.string()))

    def verdict(self, motion: float | None, aesthetic: float | None, status: str | None) -> str:
        c = self.config
        if motion is not None and not c.motion_min <= motion <= c.motion_max:
            return MOTION
        if aesthetic is not None and aesthetic < c.aesthetic_min:
            return AESTHETIC
        return status or KEPT


def main(argv: list[str] | None = None) -> int:
    """``python -m curation.clips.quality convert-head IN.pth OUT.safetensors``."""
    parser = argparse.ArgumentParser(prog="python -m curation.clips.quality",
                                     description="Convert the released aesthetic head to safetensors.")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert-head", help=convert_head.__doc__)
    convert.add_argument("pth", help="sac+logos+ava1-l14-linearMSE.pth, the released state dict")
    convert.add_argument("out", help="the .safetensors file to write")
    args = parser.parse_args(argv)
    convert_head(args.pth, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""transformers' own image and video processors where torchvision runs, ours where it does not.

Three steps feed a model pixels that its official processor would make: the captioner
(``Qwen2VLVideoProcessor``), GroundingDINO (``GroundingDinoImageProcessor``) and SAM2
(``Sam2ImageProcessor``). Those three are transformers' torch processors and need
torchvision, and PyPI's torchvision does not import beside the CPU torch this project
installs (``operator torchvision::nms does not exist``; FACTS.md). So each step has our own
few lines of torch for the same maths (``curation/clips/caption.py`` ``patchify_videos``,
``curation/objects/grounding.py`` ``normalised``), checked against the processors' PIL twins
in tests/test_preprocessing_parity.py, and against the torch processors themselves where
torchvision runs (the same file; skipped where it does not).

Which one runs is decided once per process, by ``MAGREF_PREPROCESSING``:

* ``auto`` (default): the official processors when torchvision imports *and* runs an op
  (``transformers.utils.is_torchvision_available`` only looks for the package, which is
  there but broken on a CPU-only torch), ours otherwise;
* ``official``: the official processors, or an error saying why they cannot run;
* ``ours``: ours everywhere (bit-equal runs across machines with and without torchvision).

The inputs are already at the model's size where the official processor would resize
(FrameReader decodes the captioner's frames to Qwen's ``smart_resize`` size, bicubic, as the
processor does), so the Qwen processor is called with ``do_resize=False``.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

MODES = ("auto", "official", "ours")


@functools.lru_cache(maxsize=1)
def torchvision_problem() -> str | None:
    """Why torchvision cannot serve the official processors here, or ``None`` when it can."""
    try:
        import torch
        import torchvision  # noqa: F401 - its import registers the ops it needs
        from torchvision.ops import nms

        nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except Exception as exc:  # a broken install raises RuntimeError, not ImportError
        return f"torchvision does not run here ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return None


def use_official() -> bool:
    """Whether this process feeds the models through transformers' own torch processors."""
    mode = os.environ.get("MAGREF_PREPROCESSING", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"MAGREF_PREPROCESSING={mode!r}: choose one of {', '.join(MODES)}")
    if mode == "ours":
        return False
    problem = torchvision_problem()
    if mode == "official" and problem:
        raise RuntimeError(f"MAGREF_PREPROCESSING=official: {problem}; install a torch/torchvision pair "
                           "that import together (e.g. torch==2.14.1 torchvision==0.29.1) or use 'auto'")
    return problem is None


@functools.lru_cache(maxsize=8)
def _qwen_video_processor(patch: int, merge: int, temporal: int) -> Any:
    from transformers import Qwen2VLVideoProcessor

    return Qwen2VLVideoProcessor(patch_size=patch, merge_size=merge, temporal_patch_size=temporal,
                                 do_resize=False, do_sample_frames=False)


def qwen_video_inputs(videos: list[np.ndarray], vision: Any) -> tuple[Any, Any]:
    """``pixel_values_videos`` and ``video_grid_thw`` from ``Qwen2VLVideoProcessor`` for (T, H, W, 3)
    uint8 clips already at a ``smart_resize`` size."""
    processor = _qwen_video_processor(vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size)
    out = processor(videos=[np.ascontiguousarray(v) for v in videos], do_resize=False,
                    cap_pixels_per_frame=False, return_tensors="pt")
    return out["pixel_values_videos"].float(), out["video_grid_thw"].long()


@functools.lru_cache(maxsize=8)
def _grounding_processor(shortest: int, longest: int) -> Any:
    from transformers import GroundingDinoImageProcessor

    return GroundingDinoImageProcessor(size={"shortest_edge": shortest, "longest_edge": longest})


def grounding_pixels(images: list[np.ndarray], shortest: int, longest: int, device: str) -> tuple[Any, Any]:
    """GroundingDINO's padded pixels (B, 3, H, W) and pixel mask (B, H, W) from its own processor."""
    out = _grounding_processor(shortest, longest)(images=[np.ascontiguousarray(i) for i in images],
                                                   return_tensors="pt", device=device)
    return out["pixel_values"].to(device), out["pixel_mask"].to(device).long()


@functools.lru_cache(maxsize=4)
def _sam2_processor(side: int) -> Any:
    from transformers import Sam2ImageProcessor

    return Sam2ImageProcessor(size={"height": side, "width": side})


def sam2_pixels(images: list[np.ndarray], side: int, device: str) -> Any:
    """SAM2's (B, 3, side, side) input from its own processor."""
    out = _sam2_processor(side)(images=[np.ascontiguousarray(i) for i in images], return_tensors="pt",
                                device=device)
    return out["pixel_values"].to(device)

"""Our image preprocessing against transformers' official processors (the PIL ones import here).

``curation/clips/caption.py`` ``patchify_videos`` stands in for ``Qwen2VLVideoProcessor`` and
``curation/objects/grounding.py`` ``normalised`` for GroundingDINO's and ``Sam2ImageProcessor``
where torchvision does not run (``curation/processors.py`` picks): those official torch
processors need it, and it does not import beside the CPU torch here. Their PIL twins do,
so each of ours is checked against one:

* Qwen2-VL: a clip of ``temporal_patch_size`` identical frames is exactly what
  ``Qwen2VLImageProcessorPil`` makes of that one image (it repeats an image over the
  temporal patch): patches equal to 1e-6, and the same ``grid_thw``.
* GroundingDINO: same resized size, and pixels within 0.03 (normalised units, about 1.7
  grey levels; mean under 0.01): PIL resizes to uint8, ours resizes in float, both
  bilinear with antialiasing. Unresized frames agree to 1e-6.

Where torchvision runs, the last tests compare ours with the torch processors themselves
(real multi-frame clips for Qwen), and the switch picks them.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from curation import processors, synthetic
from curation.clips.caption import patchify_videos, video_inputs
from curation.objects.grounding import model_size, normalised, pixel_batch

pytest.importorskip("transformers")


def frame(height: int, width: int, seed: int = 3) -> np.ndarray:
    """A generated scene frame (shapes, gradients, texture) at this size."""
    return next(iter(synthetic.scene_frames(1, [], height=height, width=width, seed=seed)))


def test_video_inputs_equal_qwen2vl_image_processor_on_a_clip_of_identical_frames():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    vision = SimpleNamespace(patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    processor = Qwen2VLImageProcessorPil(patch_size=14, temporal_patch_size=2, merge_size=2)
    for height, width in ((56, 84), (112, 196)):  # already at a smart_size, as FrameReader decodes them
        image = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
        ours, grid = patchify_videos([np.stack([image, image])], vision)
        official = processor(images=[Image.fromarray(image)], return_tensors="pt")
        assert grid.tolist() == official["image_grid_thw"].tolist()
        assert ours.shape == official["pixel_values"].shape
        assert (ours - official["pixel_values"]).abs().max().item() < 1e-6


@pytest.mark.parametrize("height,width,shortest,longest", [(144, 256, 64, 100), (288, 512, 120, 200), (90, 160, 90, 160)])
def test_normalised_matches_grounding_dino_image_processor(height, width, shortest, longest):
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
        GroundingDinoImageProcessorPil,
    )

    image = frame(height, width)
    processor = GroundingDinoImageProcessorPil(size={"shortest_edge": shortest, "longest_edge": longest})
    official = processor(images=[Image.fromarray(image)], return_tensors="pt")["pixel_values"][0]
    size = model_size(height, width, shortest, longest)
    ours = normalised([image], [size], "cpu")[0]
    assert tuple(official.shape[1:]) == size == tuple(ours.shape[1:])
    diff = (ours - official).abs()
    if size == (height, width):
        assert diff.max().item() < 1e-6
    else:
        assert diff.max().item() < 0.03 and diff.mean().item() < 0.01


def test_the_switch_says_why_the_official_processors_cannot_run(monkeypatch):
    monkeypatch.setenv("MAGREF_PREPROCESSING", "ours")
    assert processors.use_official() is False
    monkeypatch.setenv("MAGREF_PREPROCESSING", "fastest")
    with pytest.raises(ValueError, match="MAGREF_PREPROCESSING='fastest'"):
        processors.use_official()
    monkeypatch.setenv("MAGREF_PREPROCESSING", "official")
    if processors.torchvision_problem():
        with pytest.raises(RuntimeError, match="torchvision does not run here"):
            processors.use_official()
    else:
        assert processors.use_official() is True
    monkeypatch.setenv("MAGREF_PREPROCESSING", "auto")
    assert processors.use_official() is (processors.torchvision_problem() is None)
    # Where torchvision runs (it cannot here: stand its check in), auto takes it and ours still refuses it.
    monkeypatch.setattr(processors, "torchvision_problem", lambda: None)
    assert processors.use_official() is True
    monkeypatch.setenv("MAGREF_PREPROCESSING", "ours")
    assert processors.use_official() is False


official = pytest.mark.skipif(processors.torchvision_problem() is not None,
                              reason="the torch processors need torchvision, which does not run here")


@official
def test_patchify_videos_equals_qwen2vl_video_processor_on_moving_clips(monkeypatch):
    monkeypatch.setenv("MAGREF_PREPROCESSING", "auto")
    vision = SimpleNamespace(patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    clips = [np.stack(list(synthetic.scene_frames(t, [], height=h, width=w, seed=t)))
             for t, h, w in ((4, 56, 84), (5, 112, 196))]  # 5 frames: the last is repeated to a pair
    ours, our_grid = patchify_videos(clips, vision)
    official_pixels, official_grid = video_inputs(clips, vision)  # auto picks the processor here
    assert our_grid.tolist() == official_grid.tolist()
    assert (ours - official_pixels).abs().max().item() < 1e-5


@official
def test_grounding_and_sam2_pixels_match_their_torch_processors(monkeypatch):
    images = [frame(144, 256), frame(90, 160, seed=4)]
    monkeypatch.setenv("MAGREF_PREPROCESSING", "official")
    pixels, mask = pixel_batch(images, 64, 100, "cpu", torch.float32)
    official_sam = processors.sam2_pixels(images, 64, "cpu")
    monkeypatch.setenv("MAGREF_PREPROCESSING", "ours")
    our_pixels, our_mask = pixel_batch(images, 64, 100, "cpu", torch.float32)
    our_sam = np.stack([x.numpy() for x in normalised(images, [(64, 64)] * 2, "cpu")])
    assert pixels.shape == our_pixels.shape and mask.tolist() == our_mask.tolist()
    assert (pixels.float() - our_pixels.float()).abs().max().item() < 0.03
    assert np.abs(official_sam.numpy() - our_sam).max() < 0.03

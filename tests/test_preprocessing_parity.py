"""Our image preprocessing against transformers' official processors (the PIL ones import here).

``curation/clips/caption.py`` ``video_inputs`` stands in for ``Qwen2VLVideoProcessor`` and
``curation/objects/grounding.py`` ``normalised`` for GroundingDINO's and ``Sam2ImageProcessor``:
those official torch processors need torchvision, which does not import beside the CPU
torch here. Their PIL twins do, so each of ours is checked against one:

* Qwen2-VL: a clip of ``temporal_patch_size`` identical frames is exactly what
  ``Qwen2VLImageProcessorPil`` makes of that one image (it repeats an image over the
  temporal patch): patches equal to 1e-6, and the same ``grid_thw``.
* GroundingDINO: same resized size, and pixels within 0.03 (normalised units, about 1.7
  grey levels; mean under 0.01): PIL resizes to uint8, ours resizes in float, both
  bilinear with antialiasing. Unresized frames agree to 1e-6.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from curation import synthetic
from curation.clips.caption import video_inputs
from curation.objects.grounding import model_size, normalised

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
        ours, grid = video_inputs([np.stack([image, image])], vision)
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

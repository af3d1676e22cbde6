"""Object masks with SAM2 from GroundingDINO's boxes (MAGREF Appendix B.2, Eq. 12).

transformers' ``Sam2Model`` with the box as the prompt, one mask per box
(``multimask_output=False``: a box is not an ambiguous prompt). The costly part is the
Hiera image encoder, so each keyframe is encoded once, whatever its number of boxes;
then the light mask decoder runs on all boxes of the batch at once (image embeddings
gathered per box, across the keyframes of a batch), ``boxes_per_forward`` at a time. Low-resolution mask logits are
upsampled to the keyframe's size and thresholded on the model's device, and travel
to the CPU refinement step bit-packed (``pack_mask``): 1 bit per pixel.

Preprocessing is ``Sam2ImageProcessor`` (resize to the model's square input, ImageNet
normalisation) where torchvision runs; where it does not (beside the CPU torch, FACTS.md)
the same maths runs in torch on the device (``grounding.normalised``; ``curation/processors.py``
decides).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curation import processors
from curation.envelope import put_column, run_isolated
from curation.frames import FRAMES, decode_frames
from curation.models import default_dtype, load
from curation.objects.grounding import DETECTIONS, detections_from_row, normalised
from curation.operator import ActorPool, setting

MASKS = "_masks"  # private column: one packed mask per detection, in ``DETECTIONS`` order


@dataclass
class SegmentConfig:
    mask_threshold: float = setting(0.0, help="on SAM2's mask logits (its processor's default)")
    images_per_forward: int = setting(8, help="keyframes per image-encoder pass")
    boxes_per_forward: int = setting(64, help="boxes per mask-decoder pass (each holds its image's features)")
    pool: ActorPool = setting(factory=lambda: ActorPool(actors=1, batch_size=4, num_cpus=0.5, num_gpus=1.0), help=
        "batch_size = clips per call; one GPU per actor when the job uses GPUs (--gpus)")

    def __post_init__(self) -> None:
        if min(self.images_per_forward, self.boxes_per_forward) < 1:
            raise ValueError("segment.images_per_forward and boxes_per_forward must be >= 1")


@dataclass
class SegmentModel:
    """What the registry builds for the ``segmenter`` role."""

    model: Any  # Sam2Model
    device: str
    dtype: Any

    @property
    def image_size(self) -> int:
        return int(self.model.config.prompt_encoder_config.image_size)


def pack_mask(mask: np.ndarray) -> bytes:
    return np.packbits(np.asarray(mask, bool).ravel()).tobytes()


def unpack_mask(data: bytes, height: int, width: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, np.uint8), count=height * width)
    return bits.reshape(height, width).astype(bool)


def segment_boxes(seg: SegmentModel, images: list[np.ndarray], boxes: list[np.ndarray],
                  config: SegmentConfig) -> list[np.ndarray]:
    """Masks for ``boxes[i]`` (``(n_i, 4)`` x0, y0, x1, y1 in image i's pixels): ``(n_i, H_i, W_i)`` bool."""
    import torch

    wanted = [i for i, b in enumerate(boxes) if len(b)]
    out = [np.zeros((0, *image.shape[:2]), bool) for image in images]
    step = config.images_per_forward
    for start in range(0, len(wanted), step):
        chunk = wanted[start:start + step]
        # Every box of the chunk, with the position of its image in the chunk.
        owner = np.concatenate([np.full(len(boxes[i]), k) for k, i in enumerate(chunk)])
        flat = np.concatenate([_model_boxes(seg, boxes[i], images[i].shape[:2]) for i in chunk])
        with torch.inference_mode():
            embeddings = seg.model.get_image_embeddings(_pixels(seg, [images[i] for i in chunk]))
            logits = _decode(seg, embeddings, owner, flat, config.boxes_per_forward)
            first = 0
            for i in chunk:
                count = len(boxes[i])
                out[i] = _upsample(logits[first:first + count], images[i].shape[:2], config.mask_threshold)
                first += count
    return out


def _model_boxes(seg: SegmentModel, boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boxes in the model's square input coordinates (SAM2 resizes without keeping the aspect)."""
    height, width = shape
    scale = np.array([seg.image_size / width, seg.image_size / height] * 2, np.float32)
    return np.asarray(boxes, np.float32).reshape(-1, 4) * scale


def _pixels(seg: SegmentModel, images: list[np.ndarray]):
    """SAM2's input: every frame squashed to the model's square size, normalised (B, 3, S, S)."""
    import torch

    if processors.use_official():
        return processors.sam2_pixels(images, seg.image_size, seg.device).to(seg.dtype)
    size = (seg.image_size, seg.image_size)
    return torch.stack(normalised(images, [size] * len(images), seg.device)).to(seg.dtype)


def _decode(seg: SegmentModel, embeddings: list, owner: np.ndarray, boxes: np.ndarray, per_forward: int):
    """Mask logits (n, h, w) at SAM2's low resolution for every box; each box sees its image's features."""
    import torch

    device_owner = torch.from_numpy(owner).to(seg.device)
    logits = []
    for start in range(0, len(boxes), per_forward):
        index = device_owner[start:start + per_forward]
        features = [e.index_select(0, index) for e in embeddings]
        part = torch.from_numpy(boxes[start:start + per_forward]).to(seg.device, seg.dtype)
        result = seg.model(image_embeddings=features, input_boxes=part[:, None, :], multimask_output=False)
        logits.append(result.pred_masks[:, 0, 0].float())
    return torch.cat(logits)


def _upsample(logits, shape: tuple[int, int], threshold: float) -> np.ndarray:
    """Low-resolution logits to bool masks at the keyframe's size (thresholded on the device)."""
    import torch.nn.functional as F

    up = F.interpolate(logits[:, None], size=shape, mode="bilinear", align_corners=False)[:, 0]
    return (up > threshold).cpu().numpy()


class Segmenter:
    """Stage 2, step 3: a SAM2 mask for every detection of every live clip (``MASKS``).

    All keyframes of a batch that hold a box go through the image encoder together; all
    their boxes through the mask decoder together. A clip that fails alone
    (``run_isolated``) becomes its error row.
    """

    def __init__(self, config: SegmentConfig, models: Any = None, device: str | None = None,
                 model: SegmentModel | None = None):
        self.config = config
        self.segmenter = model or load("segmenter", models, device=device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return run_isolated(batch, self._segment)

    def _segment(self, live: pa.Table) -> pa.Table:
        missing = [c for c in (FRAMES, DETECTIONS) if c not in live.column_names]
        if missing:
            raise KeyError(f"the segmenter needs the columns {missing}: put the Grounder before it")
        images, boxes, owners = [], [], []
        per_clip = [detections_from_row(value) for value in live.column(DETECTIONS).to_pylist()]
        for position, (detections, blob) in enumerate(zip(per_clip, live.column(FRAMES).to_pylist())):
            if not detections:
                continue
            keyframes = decode_frames(blob).images
            for frame in sorted({d.frame for d in detections}):
                images.append(keyframes[frame])
                boxes.append(np.array([d.box for d in detections if d.frame == frame], np.float32))
                owners.append((position, frame))
        masks = segment_boxes(self.segmenter, images, boxes, self.config) if images else []
        by_frame = {owner: iter(found) for owner, found in zip(owners, masks)}
        packed = [[pack_mask(next(by_frame[(position, d.frame)])) for d in detections]
                  for position, detections in enumerate(per_clip)]
        return put_column(live, MASKS, pa.array(packed, pa.list_(pa.binary())))


# ---------------------------------------------------------------------------
# Registry builders: the real checkpoint, and the same class from a tiny config.
# ---------------------------------------------------------------------------

def load_segmenter(source: str, device: str, dtype: Any = None) -> SegmentModel:
    """SAM2 (transformers ``Sam2Model``) from a hub id or a local folder."""
    from transformers import Sam2Model

    dtype = default_dtype(device, dtype)
    return SegmentModel(Sam2Model.from_pretrained(source, dtype=dtype).to(device).eval(), device, dtype)


def segmenter_config(tiny: bool = True):
    """SAM2 configs: tiny (64 px, FACTS.md's rules) or the real SAM2.1 Hiera-L architecture (1024 px)."""
    from transformers import Sam2Config

    if not tiny:  # facebook/sam2.1-hiera-large
        return Sam2Config(vision_config=dict(
            backbone_config=dict(model_type="sam2_hiera_det_model", hidden_size=144, num_attention_heads=2,
                                 blocks_per_stage=[2, 6, 36, 4], embed_dim_per_stage=[144, 288, 576, 1152],
                                 num_attention_heads_per_stage=[2, 4, 8, 16], window_size_per_stage=[8, 4, 16, 8],
                                 global_attention_blocks=[23, 33, 43],
                                 window_positional_embedding_background_size=[7, 7]),
            backbone_channel_list=[1152, 576, 288, 144]))
    size = 64
    return Sam2Config(
        vision_config=dict(
            backbone_config=dict(model_type="sam2_hiera_det_model", hidden_size=16, num_attention_heads=1,
                                 image_size=[size, size], blocks_per_stage=[1, 1, 2, 1],
                                 embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 2, 2],
                                 window_size_per_stage=[4, 4, 4, 2], global_attention_blocks=[3],
                                 window_positional_embedding_background_size=[4, 4]),
            backbone_channel_list=[128, 64, 32, 16],
            backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2], fpn_hidden_size=32),
        prompt_encoder_config=dict(hidden_size=32, image_size=size, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                 iou_head_hidden_dim=32))


def tiny_segmenter(device: str) -> SegmentModel:
    """``Sam2Model`` from a small random config (64 px input), fully offline."""
    import torch
    from transformers import Sam2Model

    torch.manual_seed(0)
    return SegmentModel(Sam2Model(segmenter_config(tiny=True)).to(device).eval(), device, torch.float32)

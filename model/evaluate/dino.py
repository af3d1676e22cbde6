"""DINO image embeddings for Subj-Sim and Bg-Sim (Appendix C.3, Eq. 22-25): the CLS token, L2-normed.

The ``dino`` role is DINOv2 through transformers' ``Dinov2Model`` (``facebook/dinov2-base``
by default); ``tiny`` is the same class from a small random config. Pre-processing is
written here (resize the image to the model's square input, ImageNet mean/std) so the tiny
model needs no processor files; the real one uses the checkpoint's own size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from curation.models import default_dtype

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass
class DinoEmbedder:
    model: Any  # transformers.Dinov2Model
    size: int  # square input side in pixels
    device: str
    dtype: Any

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        """One unit-norm CLS embedding per RGB uint8 image, ``(N, D)``."""
        import torch

        if not images:
            return np.zeros((0, self.model.config.hidden_size), np.float32)
        batch = np.stack([cv2.resize(np.ascontiguousarray(im[..., :3]), (self.size, self.size),
                                     interpolation=cv2.INTER_AREA if min(im.shape[:2]) > self.size else cv2.INTER_CUBIC)
                          for im in images]).astype(np.float32) / 255.0
        batch = (batch - IMAGENET_MEAN) / IMAGENET_STD
        pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device, self.dtype)
        with torch.inference_mode():
            cls = self.model(pixel_values=pixels).pooler_output.float()
        cls = cls / cls.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return cls.cpu().numpy()


def load_dino(source: str, device: str, dtype: Any = None) -> DinoEmbedder:
    from transformers import Dinov2Model

    dtype = default_dtype(device, dtype)
    model = Dinov2Model.from_pretrained(source, torch_dtype=dtype).to(device).eval()
    return DinoEmbedder(model, 224, device, dtype)


def tiny_dino(device: str) -> DinoEmbedder:
    """``Dinov2Model`` from a small random config: 56 px input, 2 layers, hidden 32."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          image_size=56, patch_size=14)
    return DinoEmbedder(Dinov2Model(config).to(device).eval(), 56, device, torch.float32)

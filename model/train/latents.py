"""What the transformer trains on, computed online or read from the latent cache.

``ModelInputs`` is a batch after every frozen encoder has run: the clip latents x1
(VAE mode, normalised as Wan does), the 20 condition channels of the canvas (Eq. 1-4),
the UMT5 prompt states, the CLIP states of the canvas and the subject guidance (Eq. 5-6).
Training without a cache computes it with ``encode_examples`` every step; the cache job
computes the same tensors once per ``(sample_id, augmentation)`` and writes them with
``write_entry``; ``model.train.latent_cache.CachedDataset`` reads them back. Both paths meet in
``ModelInputs``, so the training step cannot tell them apart, and a cached run needs no
VAE, UMT5 or CLIP.

A cache entry is one safetensors file (no pickle),
``latent_files/<2 hex>/<sample_id>.<aug>.safetensors`` under the cache root (a local path
or a pyarrow filesystem URI). Text states are stored without their zero padding (Wan zeroes states past the prompt's length) and padded back
to 512 on read, which cuts a 14B cache entry by ~8 MB.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from model.conditioning import _module_device, canvas_tensor, encode_condition, normalize_latents
from model.disentangle import SubjectGuidance
from model.pipeline import load_components
from model.tiny import tiny_components
from model.train.data import Example
from schemas.io import Location, write_bytes

FORMAT = "magref-latents-v1"
FILES = "latent_files"  # entries live under ROOT/latent_files/, the index in ROOT/latents/


@dataclass
class ModelInputs:
    """One batch for ``magref_velocity``; every tensor's first dimension is the batch."""

    sample_ids: list[str]
    augmentations: list[int]
    latents: torch.Tensor                 # x1: [B, 16, T, h, w]
    condition: torch.Tensor               # [B, 20, T, h, w]: mask (4) + reference latents (16)
    prompt_embeds: torch.Tensor           # [B, 512, C_text]
    image_embeds: torch.Tensor | None     # [B, N_img, C_img] or None (no CLIP in this backbone)
    guidance: SubjectGuidance | None      # Eq. 6 inputs, None when no example has subjects

    def __len__(self) -> int:
        return len(self.sample_ids)

    def to(self, device: torch.device | str) -> "ModelInputs":
        move = (lambda t: None if t is None else t.to(device, non_blocking=True))
        guidance = None if self.guidance is None else SubjectGuidance(
            move(self.guidance.token_weights), move(self.guidance.token_masks))
        return ModelInputs(self.sample_ids, self.augmentations, move(self.latents),
                           move(self.condition), move(self.prompt_embeds),
                           move(self.image_embeds), guidance)

    @classmethod
    def collate(cls, items: Sequence["ModelInputs"]) -> "ModelInputs":
        if any(len(i) != 1 for i in items):
            raise ValueError("collate takes batch-1 inputs (cache entries)")
        cat = (lambda ts: torch.cat(ts) if ts[0] is not None else None)
        return cls([s for i in items for s in i.sample_ids], [a for i in items for a in i.augmentations],
                   cat([i.latents for i in items]), cat([i.condition for i in items]),
                   cat([i.prompt_embeds for i in items]), cat([i.image_embeds for i in items]),
                   guidance_of(items))


def guidance_of(items: Sequence[Example | ModelInputs]) -> SubjectGuidance | None:
    """The batch's subject guidance, padded to its most subjects; None when none has any."""
    guides = [e.guidance for e in items]
    return SubjectGuidance.stack(guides) if any(g is not None for g in guides) else None


@torch.no_grad()
def encode_examples(pipe: Any, examples: Sequence[Example]) -> ModelInputs:
    """The frozen half of MAGREF on a batch of same-bucket examples (VAE, UMT5, CLIP).

    ``pipe`` is a ``MagrefPipeline`` (its transformer is not used here). Clip latents use
    the VAE posterior's mode, as the condition latents do, so a cached entry is exact; pixels
    map to [-1, 1] with ``canvas_tensor``'s arithmetic, so a canvas as the target's frame 0
    (``DataConfig.first_frame``) encodes to exactly the condition's first latent frame.
    """
    vae = pipe.vae
    device = _module_device(vae)
    frames = torch.from_numpy(np.stack([e.frames for e in examples]))       # [B, F, H, W, 3] uint8
    pixels = ((frames.to(device).permute(0, 4, 1, 2, 3).float() / 255 - 0.5) / 0.5).to(vae.dtype)
    latents = normalize_latents(vae, vae.encode(pixels).latent_dist.mode().float())
    canvases = torch.stack([canvas_tensor(e.canvas.image) for e in examples])
    masks = torch.from_numpy(np.stack([e.canvas.region_mask for e in examples]))
    condition = encode_condition(vae, canvases, masks, frames.shape[1])
    prompt_embeds = pipe.encode_prompt([e.prompt for e in examples]).float()
    image_embeds = None
    if pipe.transformer.config.image_dim is not None:
        image_embeds = torch.cat([pipe.encode_image(e.canvas.image) for e in examples]).float()
    return ModelInputs([e.sample_id for e in examples], [e.augmentation for e in examples],
                       latents, condition, prompt_embeds, image_embeds, guidance_of(examples))


def load_encoders(source: str, device: str | None = None, dtype: torch.dtype | None = None) -> Any:
    """A ``MagrefPipeline`` for ``encode_examples``: VAE, UMT5 and CLIP, and a transformer
    that has its config but no weights (meta device), so a 14B checkpoint costs nothing here."""
    if source == "tiny":
        return tiny_components(device or "cpu")
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    with init_empty_weights():
        placeholder = WanTransformer3DModel.from_config(
            WanTransformer3DModel.load_config(source, subfolder="transformer"))
    return load_components(source, device, dtype, transformer=placeholder)


# -- the cache on disk ------------------------------------------------------------------------

def entry_path(sample_id: str, augmentation: int) -> str:
    """Relative path of a cache entry: sharded by a hash of the id, named by id and seed."""
    shard = hashlib.blake2b(sample_id.encode(), digest_size=1).hexdigest()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", sample_id)
    return posixpath.join(FILES, shard, f"{safe}.{augmentation}.safetensors")


def entry_bytes(inputs: ModelInputs, dtype: torch.dtype = torch.float32) -> bytes:
    """One example's tensors as a safetensors blob (text states without their zero tail)."""
    from safetensors.torch import save

    if len(inputs) != 1:
        raise ValueError(f"a cache entry holds one example, got {len(inputs)}")
    text = inputs.prompt_embeds[0]
    length = int(text.abs().sum(dim=-1).nonzero().max()) + 1 if text.abs().sum() > 0 else 0
    tensors = {"latents": inputs.latents[0], "condition": inputs.condition[0],
               "prompt_embeds": text[:length]}
    if inputs.image_embeds is not None:
        tensors["image_embeds"] = inputs.image_embeds[0]
    if inputs.guidance is not None:
        tensors["token_weights"] = inputs.guidance.token_weights[0]
        tensors["token_masks"] = inputs.guidance.token_masks[0]
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in tensors.items()}
    metadata = {"format": FORMAT, "sample_id": inputs.sample_ids[0],
                "augmentation": str(inputs.augmentations[0]),
                "text_length": str(inputs.prompt_embeds.shape[1])}
    return save(tensors, metadata=metadata)


def write_entry(root: str, inputs: ModelInputs, dtype: torch.dtype = torch.float32) -> tuple[str, int]:
    """Write one example's entry atomically under ``root``; returns (relative path, bytes)."""
    relative = entry_path(inputs.sample_ids[0], inputs.augmentations[0])
    blob = entry_bytes(inputs, dtype)
    write_bytes(Location.of(root).join(relative), blob)
    return relative, len(blob)


def read_entry(root: str, relative: str) -> ModelInputs:
    """One cache entry back as a batch-1 ``ModelInputs`` in float32."""
    from safetensors.torch import load

    loc = Location.of(root).join(relative)
    with loc.fs.open_input_stream(loc.path) as stream:
        blob = stream.read()
    tensors = {k: v.float() for k, v in load(blob).items()}
    metadata = _metadata(blob)
    text = tensors["prompt_embeds"]
    padded = torch.zeros(int(metadata["text_length"]), text.shape[-1])
    padded[:text.shape[0]] = text
    guidance = None
    if "token_weights" in tensors:
        guidance = SubjectGuidance(tensors["token_weights"][None], tensors["token_masks"][None])
    return ModelInputs([metadata["sample_id"]], [int(metadata["augmentation"])],
                       tensors["latents"][None], tensors["condition"][None], padded[None],
                       tensors["image_embeds"][None] if "image_embeds" in tensors else None, guidance)


def _metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (its JSON header)."""
    header = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + header]).get("__metadata__", {})

"""What the transformer trains on, computed online or read from the latent cache.

``ModelInputs`` is a batch after every frozen encoder has run: the clip latents x1
(VAE mode, normalised as Wan does), the 20 condition channels of the canvas (Eq. 1-4),
the UMT5 prompt states, the CLIP states of the canvas and the subject guidance (Eq. 5-6).
Training without a cache computes it with ``encode_examples`` every step; the cache job
computes the same tensors once per ``(sample_id, augmentation)`` and writes them with
``write_entry``; ``CachedDataset`` reads them back. Both paths meet in ``ModelInputs``,
so the training step cannot tell them apart, and a cached run needs no VAE, UMT5 or CLIP.

A cache entry is one safetensors file (no pickle), ``files/<2 hex>/<sample_id>.<aug>.safetensors``
under the cache root, a local path or a pyarrow filesystem URI. Text states are stored
without their zero padding (Wan zeroes states past the prompt's length) and padded back
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

from model.conditioning import canvas_tensor, encode_condition, normalize_latents
from model.data import BadRecord, Example
from model.disentangle import TEXT_LENGTH, SubjectGuidance

FORMAT = "magref-latents-v1"
FILES = "files"
META = "cache.json"


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

    def split(self) -> list["ModelInputs"]:
        """Per-example views (batch 1), e.g. to cache each example on its own."""
        out = []
        for b in range(len(self)):
            g = self.guidance
            one = None
            if g is not None and g.token_weights[b].any():
                keep = g.token_weights[b].any(dim=-1)  # drop the padding subjects of others
                one = SubjectGuidance(g.token_weights[b:b + 1, keep], g.token_masks[b:b + 1, keep])
            out.append(ModelInputs([self.sample_ids[b]], [self.augmentations[b]],
                                   self.latents[b:b + 1], self.condition[b:b + 1],
                                   self.prompt_embeds[b:b + 1],
                                   None if self.image_embeds is None else self.image_embeds[b:b + 1],
                                   one))
        return out

    @classmethod
    def collate(cls, items: Sequence["ModelInputs"]) -> "ModelInputs":
        if any(len(i) != 1 for i in items):
            raise ValueError("collate takes batch-1 inputs (cache entries)")
        cat = (lambda ts: torch.cat(ts) if ts[0] is not None else None)
        guides = [i.guidance for i in items]
        guidance = None
        if any(g is not None for g in guides):
            guidance = SubjectGuidance.stack(guides)
        return cls([s for i in items for s in i.sample_ids], [a for i in items for a in i.augmentations],
                   cat([i.latents for i in items]), cat([i.condition for i in items]),
                   cat([i.prompt_embeds for i in items]), cat([i.image_embeds for i in items]),
                   guidance)


def guidance_of(examples: Sequence[Example]) -> SubjectGuidance | None:
    guides = [e.guidance for e in examples]
    return SubjectGuidance.stack(guides) if any(g is not None for g in guides) else None


@torch.no_grad()
def encode_examples(pipe: Any, examples: Sequence[Example]) -> ModelInputs:
    """The frozen half of MAGREF on a batch of same-bucket examples (VAE, UMT5, CLIP).

    ``pipe`` is a ``MagrefPipeline`` (its transformer is not used here). Clip latents use
    the VAE posterior's mode, as the condition latents do, so a cached entry is exact.
    """
    from model.conditioning import _module_device

    vae = pipe.vae
    device = _module_device(vae)
    frames = torch.from_numpy(np.stack([e.frames for e in examples]))       # [B, F, H, W, 3] uint8
    pixels = frames.to(device).permute(0, 4, 1, 2, 3).to(vae.dtype) / 127.5 - 1.0
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
    from schemas.io import Location

    relative = entry_path(inputs.sample_ids[0], inputs.augmentations[0])
    blob = entry_bytes(inputs, dtype)
    final = Location.of(root).join(relative)
    final.fs.create_dir(posixpath.dirname(final.path), recursive=True)
    tmp = posixpath.join(posixpath.dirname(final.path), "." + posixpath.basename(final.path) + ".tmp")
    with final.fs.open_output_stream(tmp) as out:
        out.write(blob)
    final.fs.move(tmp, final.path)
    return relative, len(blob)


def read_entry(root: str, relative: str) -> ModelInputs:
    """One cache entry back as a batch-1 ``ModelInputs`` in float32."""
    from safetensors.torch import load

    from schemas.io import Location

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


class CachedDataset:
    """The cache as a dataset: same sample order and augmentation seeds as the raw table.

    ``entries`` maps ``(sample_id, augmentation) -> relative path`` (the cache job's index
    table). Sample ids are sorted, as ``SamplesTable`` sorts them, so index i is the same
    sample in a cached and an uncached run over the same good samples.
    """

    def __init__(self, root: str, entries: dict[tuple[str, int], str]) -> None:
        self.root, self.entries = root, entries
        self.ids = sorted({sid for sid, _ in entries})

    def __len__(self) -> int:
        return len(self.ids)

    def sample_id(self, index: int) -> str:
        return self.ids[index]

    def load(self, index: int, augmentation: int) -> "CachedExample":
        sample_id = self.ids[index]
        relative = self.entries.get((sample_id, augmentation))
        if relative is None:
            raise BadRecord("not_cached", sample_id, f"augmentation {augmentation} is not in the cache")
        try:
            return CachedExample(read_entry(self.root, relative))
        except (OSError, ValueError, KeyError) as exc:
            raise BadRecord("unreadable_cache", sample_id, f"cache entry {relative!r}: {exc}") from exc


@dataclass
class CachedExample:
    """A cache entry as the batcher sees it: a bucket key and the model inputs."""

    inputs: ModelInputs

    @property
    def bucket(self) -> tuple[int, ...]:
        return tuple(self.inputs.latents.shape[2:])

    @property
    def sample_id(self) -> str:
        return self.inputs.sample_ids[0]


def read_meta(root: str) -> dict[str, Any]:
    """``cache.json``: the data settings and base model the cache was built with."""
    from schemas.io import Location

    loc = Location.of(root).join(META)
    if not loc.exists():
        raise FileNotFoundError(f"{root} has no {META}: not a latent cache (build one with "
                                f"pipelines/cache_latents.py)")
    with loc.fs.open_input_stream(loc.path) as stream:
        return json.loads(stream.read().decode())


def write_meta(root: str, meta: dict[str, Any]) -> None:
    from schemas.io import Location

    loc = Location.of(root)
    loc.fs.create_dir(loc.path, recursive=True)
    with loc.fs.open_output_stream(loc.join(META).path) as out:
        out.write(json.dumps(meta, indent=1, sort_keys=True).encode())


def open_cache(root: str) -> tuple[dict[str, Any], CachedDataset]:
    """The cache's settings and its entries (the ``latents`` index table under ``root``)."""
    from schemas.io import Location, read_table

    meta = read_meta(root)
    index = read_table(Location.of(root).join("latents"), "latents",
                       columns=["sample_id", "augmentation", "path"])
    entries = {(sid, int(aug)): path for sid, aug, path in zip(
        index.column("sample_id").to_pylist(), index.column("augmentation").to_pylist(),
        index.column("path").to_pylist())}
    if not entries:
        raise FileNotFoundError(f"{root}: the latent cache has no entries yet")
    return meta, CachedDataset(root, entries)


def cache_meta(config: Any, base: str, dtype: torch.dtype) -> dict[str, Any]:
    """What ``cache.json`` records: a cached run adopts these data settings."""
    from dataclasses import asdict

    if config.augmentations is None:
        raise ValueError("a latent cache holds a fixed number of augmentations per sample; "
                         "set DataConfig.augmentations")
    return {"format": FORMAT, "data": asdict(config), "base": base,
            "dtype": str(dtype).removeprefix("torch.")}


def cache_row(row: dict[str, Any], pipe: Any, config: Any, root: str,
              dtype: torch.dtype = torch.float32) -> list[dict[str, Any]]:
    """Encode one samples row for each augmentation seed and write its entries.

    Returns the ``latents`` index rows; raises ``BadRecord`` for a row that cannot be
    trained on (the cache job turns it into an error row). The job's operator and
    ``cache_samples`` both call this, so they write the same files.
    """
    from model.data import make_example

    rows = []
    for augmentation in range(config.augmentations):
        example = make_example(row, augmentation, config, pipe.tokenizer)
        relative, size = write_entry(root, encode_examples(pipe, [example]), dtype)
        width, height, frames = example.bucket
        rows.append({"entry_id": f"{example.sample_id}.{augmentation}",
                     "sample_id": example.sample_id, "augmentation": augmentation,
                     "path": relative, "width": width, "height": height, "frames": frames,
                     "bytes": size})
    return rows


def cache_samples(manifest: str, pipe: Any, root: str, config: Any, base: str,
                  dtype: torch.dtype = torch.float32) -> dict[str, int]:
    """Cache a samples table in this process (small sets; ``pipelines/cache_latents.py`` is
    the resumable Ray job for real ones). Returns counts: entries written, rows skipped."""
    import pyarrow as pa

    from model.data import SamplesTable
    from schemas.io import Location, write_part

    write_meta(root, cache_meta(config, base, dtype))
    table = SamplesTable(manifest)
    index, skipped = [], table.skipped_rows
    for i in range(len(table)):
        try:
            index += cache_row(table.row(i), pipe, config, root, dtype)
        except BadRecord:
            skipped += 1
    if index:
        from schemas.tables import schema_for

        write_part(pa.Table.from_pylist(index, schema=schema_for("latents")),
                   Location.of(root).join("latents"), "latents", name="local")
    return {"entries": len(index), "skipped": skipped}

"""MAGREF masked guidance (paper section 3.1, Eq. 1-4): canvas, region mask, condition latents.

Any number of references (1-8) becomes *one* first frame, so the I2V backbone's native
image-to-video path carries them: the references are laid out on a blank canvas (Eq. 1),
a binary mask marks where they landed (Eq. 2, and per reference Eq. 5), the canvas followed
by zero frames is VAE-encoded (Eq. 3), and mask + latents are the 20 channels that Wan I2V
concatenates after its 16 noisy-latent channels (Eq. 4).

Geometry and channel order follow the released MAGREF inference (FACTS.md), so the
released weights see the inputs they were trained on:

* grid by count: 1 → 1×1, 2 → 2×1, 3 → 3×1, 4 → 2×2, 5-6 → 3×2, 7-8 → 4×2 (cols×rows);
  the last column / row takes the remainder of ``W // cols`` / ``H // rows``;
* each reference is composited over the fill colour (white), resized with LANCZOS keeping
  its aspect ratio to fit its cell (the release's ratio test and ``int()`` truncation,
  :func:`fit_size`) and centred (padding ``// 2``); its mask is its rectangle R_k;
* latent mask: stride-8 any-pooling; Wan's 4 mask channels hold it in the first latent
  frame and zeros after; channels are ``[noisy (16), mask (4), reference latents (16)]``.
  The paper's Eq. 4 writes ``Concat(Z, F, M)``; the code order is what the weights know;
* CLIP sees the whole canvas squashed to a square (:func:`clip_canvas_pixels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from curation.images import CLIP_MEAN, CLIP_STD  # OpenAI CLIP's, which Wan's CLIP image encoder uses
from schemas.samples import MAX_REFERENCES  # noqa: F401 - the canvas limit has one owner: the samples contract

# Smallest grid (count of cells) that holds n references, and its (cols, rows).
_GRIDS: tuple[tuple[int, tuple[int, int]], ...] = (
    (1, (1, 1)), (2, (2, 1)), (3, (3, 1)), (4, (2, 2)), (6, (3, 2)), (8, (4, 2)),
)
WHITE = (255, 255, 255)
VAE_STRIDE = 8          # Wan VAE spatial compression
VAE_TEMPORAL_STRIDE = 4  # Wan VAE temporal compression; also the number of mask channels
SIZE_MULTIPLE = 16       # VAE stride 8 × transformer patch 2


class ConditioningError(ValueError):
    """A reference set or video size that MAGREF cannot condition on, with the reason."""


@dataclass
class Canvas:
    """The composite first frame and its masks (Eq. 1, 2, 5).

    ``subject_masks[k]`` and ``boxes[k]`` belong to ``refs[k]`` in the order given, whatever
    cell the shuffle put it in, so subject words can name references by their index.
    """

    image: Image.Image               # RGB, width × height (Eq. 1)
    region_mask: np.ndarray          # bool [H, W], union of the R_k (Eq. 2)
    subject_masks: np.ndarray        # bool [K, H, W], one R_k per reference (Eq. 5)
    boxes: list[tuple[int, int, int, int]]  # (x, y, w, h) of each R_k


def check_video_size(height: int, width: int, num_frames: int | None = None) -> None:
    """Wan needs H, W divisible by 16 and ``num_frames = 4k + 1``; say so instead of rounding."""
    if height <= 0 or width <= 0 or height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ConditioningError(
            f"video size {width}x{height} (WxH) is not divisible by {SIZE_MULTIPLE}: Wan encodes "
            f"with stride {VAE_STRIDE} and patches 2x2 latents; try "
            f"{max(SIZE_MULTIPLE, width // SIZE_MULTIPLE * SIZE_MULTIPLE)}x"
            f"{max(SIZE_MULTIPLE, height // SIZE_MULTIPLE * SIZE_MULTIPLE)}")
    if num_frames is not None and (num_frames < 1 or (num_frames - 1) % VAE_TEMPORAL_STRIDE):
        raise ConditioningError(
            f"num_frames={num_frames} is not 4k+1 (Wan's VAE compresses time by 4 after the "
            f"first frame); try {max(1, (num_frames - 1) // 4 * 4 + 1)}")


def grid_for(count: int) -> tuple[int, int]:
    """(cols, rows) of the release's layout for ``count`` references."""
    if count < 1:
        raise ConditioningError("MAGREF needs at least one reference image")
    if count > MAX_REFERENCES:
        raise ConditioningError(
            f"{count} reference images given; MAGREF's canvas holds at most {MAX_REFERENCES} "
            f"(the release silently drops the rest; we refuse instead)")
    return next(grid for cells, grid in _GRIDS if cells >= count)


def cell_boxes(height: int, width: int, cols: int, rows: int) -> list[tuple[int, int, int, int]]:
    """Cells row-major as (x, y, w, h); the last column/row absorbs the remainder."""
    cw, ch = width // cols, height // rows
    boxes = []
    for r in range(rows):
        for c in range(cols):
            w = width - cw * c if c == cols - 1 else cw
            h = height - ch * r if r == rows - 1 else ch
            boxes.append((c * cw, r * ch, w, h))
    return boxes


def flatten_reference(ref: Image.Image, fill: tuple[int, int, int] = WHITE) -> Image.Image:
    """RGB view of a reference: RGBA/LA/P-with-alpha are alpha-composited over ``fill``."""
    if ref.mode in ("RGBA", "LA") or (ref.mode == "P" and "transparency" in ref.info):
        rgba = ref.convert("RGBA")
        base = Image.new("RGBA", rgba.size, fill + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return ref.convert("RGB")


def fit_size(size: tuple[int, int], cell: tuple[int, int]) -> tuple[int, int]:
    """Largest (w, h) with ``size``'s aspect ratio inside ``cell``, rounded as the release rounds.

    The release (``resize_and_pad``) compares the ratios ``r = w / h`` and ``cw / ch`` with a
    strict ``>`` and truncates ``cw / r`` or ``ch * r``; the same arithmetic in another order
    (``h * cw / w``) differs by 1 px for some sizes (a 205x200 reference alone: 491 px wide in
    the release, 492 the other way), so this keeps the release's expression exactly. The
    ``max(1, ...)`` only matters where the release would ask PIL for a 0-px side and crash.
    """
    (w, h), (cw, ch) = size, cell
    r = w / h
    if r > cw / ch:
        return cw, max(1, int(cw / r))
    return max(1, int(ch * r)), ch


def compose_canvas(refs: Sequence[Image.Image], height: int, width: int,
                   rng: np.random.Generator | None = None,
                   fill: tuple[int, int, int] = WHITE) -> Canvas:
    """Place 1-8 references on a ``width × height`` canvas (Eq. 1) with their masks (Eq. 2, 5).

    With ``rng`` the references are dealt to randomly chosen cells (the paper's
    anti-positional-bias shuffle for training); without it, reference k takes cell k, so
    sampling is deterministic.
    """
    cols, rows = grid_for(len(refs))
    cells = cell_boxes(height, width, cols, rows)
    order = list(range(len(cells)))
    if rng is not None:
        order = [int(i) for i in rng.permutation(len(cells))]
    canvas = Image.new("RGB", (width, height), fill)
    subject_masks = np.zeros((len(refs), height, width), dtype=bool)
    boxes = []
    for k, ref in enumerate(refs):
        cx, cy, cw, ch = cells[order[k]]
        rgb = flatten_reference(ref, fill)
        w, h = fit_size(rgb.size, (cw, ch))
        x, y = cx + (cw - w) // 2, cy + (ch - h) // 2
        canvas.paste(rgb.resize((w, h), Image.LANCZOS), (x, y))
        subject_masks[k, y:y + h, x:x + w] = True
        boxes.append((x, y, w, h))
    return Canvas(canvas, subject_masks.any(axis=0), subject_masks, boxes)


def any_pool(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """[..., H, W] bool/float → [..., H/s, W/s] float: a cell is 1 if any pixel of it is 1.

    This is the release's latent-mask rule (stride 8) and our subject-token rule (stride 16):
    a partly covered cell still carries the reference, so it is marked.
    """
    lead = mask.shape[:-2]
    pooled = F.max_pool2d(mask.float().reshape(-1, 1, *mask.shape[-2:]), stride, stride)
    return pooled.reshape(*lead, *pooled.shape[-2:])


def canvas_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB → [3, H, W] float in [-1, 1], the range Wan's VAE and the release's CLIP take.

    Written as the release computes it (``to_tensor(img).sub_(0.5).div_(0.5)``) so the float32
    values are bit-identical to what its VAE and CLIP encoder see.
    """
    arr = (np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255) - np.float32(0.5)) \
        / np.float32(0.5)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def clip_canvas_pixels(canvas: Image.Image | torch.Tensor, size: int,
                       mean: Sequence[float] = CLIP_MEAN,
                       std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """The CLIP encoder's input as the release builds it: the *whole* canvas, squashed.

    Wan's ``CLIPModel.visual`` (used unchanged by MAGREF) resizes the [-1, 1] canvas to
    ``size × size`` with bicubic interpolation (``align_corners=False``, no antialias, no
    crop), maps it to [0, 1] and normalises with CLIP's mean and std. Every reference on the
    canvas therefore reaches CLIP, squeezed horizontally; a shortest-edge resize + centre crop
    (``CLIPImageProcessor``) would keep only the middle 480 of 832 columns.

    ``canvas``: PIL image or [B, 3, H, W] in [-1, 1]. Returns [B, 3, size, size] float32.
    """
    pixels = canvas_tensor(canvas)[None] if isinstance(canvas, Image.Image) else canvas
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ConditioningError(f"canvas must be [B, 3, H, W], got {tuple(pixels.shape)}")
    squashed = F.interpolate(pixels.float(), size=(size, size), mode="bicubic", align_corners=False)
    squashed = squashed * 0.5 + 0.5
    mean_t = torch.tensor(mean, dtype=torch.float32, device=squashed.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=squashed.device).view(1, 3, 1, 1)
    return (squashed - mean_t) / std_t


def latent_mask_channels(region_mask: torch.Tensor, num_frames: int) -> torch.Tensor:
    """[B, H, W] pixel region mask → Wan's [B, 4, T_lat, H/8, W/8] mask channels (Eq. 2, 4).

    Wan builds a per-pixel-frame mask (frame 0 = the mask, frames 1.. = 0), repeats frame 0
    four times so the count is divisible by the VAE's temporal stride, and folds every
    4 consecutive frames into 4 channels; so latent frame 0 carries the region mask in all
    4 channels and every later latent frame is 0.
    """
    latent = any_pool(region_mask, VAE_STRIDE)                      # [B, h, w]
    b, h, w = latent.shape
    t_lat = (num_frames - 1) // VAE_TEMPORAL_STRIDE + 1
    frames = torch.zeros(b, num_frames + VAE_TEMPORAL_STRIDE - 1, h, w, dtype=latent.dtype,
                         device=latent.device)
    frames[:, :VAE_TEMPORAL_STRIDE] = latent[:, None]
    return frames.view(b, t_lat, VAE_TEMPORAL_STRIDE, h, w).transpose(1, 2)


def normalize_latents(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Wan's latent normalisation ``(z - mean) / std`` with the VAE's per-channel stats."""
    mean = torch.tensor(vae.config.latents_mean, device=latents.device, dtype=latents.dtype)
    std = torch.tensor(vae.config.latents_std, device=latents.device, dtype=latents.dtype)
    return (latents - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)


def denormalize_latents(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize_latents`, before ``vae.decode``."""
    mean = torch.tensor(vae.config.latents_mean, device=latents.device, dtype=latents.dtype)
    std = torch.tensor(vae.config.latents_std, device=latents.device, dtype=latents.dtype)
    return latents * std.view(1, -1, 1, 1, 1) + mean.view(1, -1, 1, 1, 1)


def _module_device(module: torch.nn.Module) -> torch.device:
    """Where a module computes; accelerate's offload hook records it when weights sit on CPU."""
    hook = getattr(module, "_hf_hook", None)
    if hook is not None and getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    return next(module.parameters()).device


def encode_condition(vae: torch.nn.Module, canvas: Image.Image | torch.Tensor,
                     mask: np.ndarray | torch.Tensor, num_frames: int) -> torch.Tensor:
    """The 20 condition channels of MAGREF (Eq. 3, 4): ``[mask (4), reference latents (16)]``.

    ``canvas``: a PIL image or [B, 3, H, W] in [-1, 1]; ``mask``: [H, W] or [B, H, W] region
    mask (Eq. 2). The canvas is frame 0 of an otherwise black (zero) clip of ``num_frames``
    (Eq. 3), encoded with the latent distribution's mode and normalised as Wan I2V does.
    Returns [B, 20, T_lat, H/8, W/8] in float32 on the VAE's execution device; concatenated
    after the 16 noisy-latent channels it is the I2V transformer's 36-channel input.
    """
    pixels = canvas_tensor(canvas)[None] if isinstance(canvas, Image.Image) else canvas
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ConditioningError(f"canvas must be [B, 3, H, W], got {tuple(pixels.shape)}")
    b, _, height, width = pixels.shape
    check_video_size(height, width, num_frames)
    region = torch.as_tensor(mask)
    region = region[None] if region.ndim == 2 else region
    if tuple(region.shape[-2:]) != (height, width):
        raise ConditioningError(
            f"mask is {tuple(region.shape[-2:])} but the canvas is {(height, width)}")
    device = _module_device(vae)
    clip = torch.zeros(b, 3, num_frames, height, width, device=device, dtype=vae.dtype)
    clip[:, :, 0] = pixels.to(device=device, dtype=vae.dtype)
    latents = vae.encode(clip).latent_dist.mode().float()
    latents = normalize_latents(vae, latents)
    mask_channels = latent_mask_channels(region.to(device).expand(b, -1, -1), num_frames)
    return torch.cat([mask_channels, latents], dim=1)

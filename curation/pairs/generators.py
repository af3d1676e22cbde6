"""The two diffusers pipelines of stage 4, loaded by the registry and called one way.

* the **editor** (role ``editor``, default ``black-forest-labs/FLUX.1-Kontext-dev``, a
  ``FluxKontextPipeline``) turns a reference into a variant I' from an instruction;
* the **inpainter** (role ``inpainter``, default
  ``diffusers/stable-diffusion-xl-1.0-inpainting-0.1``) fills the subjects' region of a
  keyframe to make the background I^Bg.

Any diffusers image-editing or inpainting pipeline directory can replace either
(``--models editor=/models/my-editor``): ``DiffusionPipeline.from_pretrained`` picks
the class from the folder's ``model_index.json``, and the calls below pass only the
arguments the pipeline's ``__call__`` accepts.

The Kontext trap (FACTS.md): FLUX Kontext takes its output size from ``max_area``
(default 1024^2), not from ``height``/``width``, and with ``_auto_resize`` it resizes
the input to ~1 MP. ``edit`` therefore passes ``max_area = height * width`` and
``_auto_resize=False`` whenever the pipeline has them, and checks the size it got.

Seeds: each item gets its own ``torch.Generator``, so an item's output depends on its
seed, not on which other items share its batch.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np

from curation.models import default_dtype


def load_editor(source: str, device: str, dtype: Any = None) -> Any:
    """The registry's loader for ``editor``: any diffusers image-editing pipeline."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(source, torch_dtype=default_dtype(device, dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_inpainter(source: str, device: str, dtype: Any = None) -> Any:
    """The registry's loader for ``inpainter``: any diffusers inpainting pipeline."""
    import torch
    from diffusers import AutoPipelineForInpainting

    dtype = default_dtype(device, dtype)
    pipe = AutoPipelineForInpainting.from_pretrained(source, torch_dtype=dtype)
    if dtype == torch.bfloat16 and hasattr(pipe, "vae"):
        # SDXL's VAE asks to be upcast around every encode: needed for fp16 overflow, not
        # for bf16, and each cast moves the whole VAE (and warns).
        pipe.vae.register_to_config(force_upcast=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def size_multiple(pipe: Any) -> int:
    """Output sides must be multiples of this: the VAE's stride, x2 for Flux's 2x2 latent packing."""
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    return factor * 2


def fit_size(width: int, height: int, area: int, multiple: int, max_aspect: float = 2.0) -> tuple[int, int]:
    """(w, h) with about ``area`` pixels, the source's aspect ratio (clamped), sides multiples of ``multiple``."""
    aspect = min(max(width / max(height, 1), 1 / max_aspect), max_aspect)
    out_w = max(multiple, int(round((area * aspect) ** 0.5 / multiple)) * multiple)
    out_h = max(multiple, int(round((area / aspect) ** 0.5 / multiple)) * multiple)
    return out_w, out_h


def _generators(pipe: Any, seeds: Sequence[int]) -> list[Any]:
    import torch

    device = getattr(pipe, "device", "cpu")
    device = "cpu" if str(device) == "meta" else device
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def _accepted(pipe: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Only the arguments this pipeline's ``__call__`` takes (editors differ)."""
    params = inspect.signature(pipe.__call__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {key: value for key, value in kwargs.items() if key in params}


def edit(pipe: Any, images: Sequence[np.ndarray], prompts: Sequence[str], seeds: Sequence[int],
         size: tuple[int, int], steps: int, guidance: float) -> list[np.ndarray]:
    """Edit RGB uint8 ``images`` (all resized to ``size`` = (w, h)) by ``prompts``; RGB uint8 out."""
    from PIL import Image

    width, height = size
    pil = [Image.fromarray(image).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
           for image in images]
    kwargs = _accepted(pipe, {
        "image": pil, "prompt": list(prompts), "height": height, "width": width,
        "num_inference_steps": steps, "guidance_scale": guidance, "generator": _generators(pipe, seeds),
        "output_type": "np",
        # The Kontext trap: without these the output is ~1024x1024 whatever height/width say.
        "max_area": height * width, "_auto_resize": False,
    })
    out = pipe(**kwargs).images
    results = [_to_uint8(image) for image in out]
    for result in results:
        if result.shape[:2] != (height, width):
            raise RuntimeError(f"editor returned {result.shape[1]}x{result.shape[0]}, asked for {width}x{height}")
    return results


def inpaint(pipe: Any, image: np.ndarray, mask: np.ndarray, prompt: str, negative_prompt: str, seed: int,
            steps: int, guidance: float, strength: float) -> np.ndarray:
    """Fill ``mask`` (uint8, >0 = remove) of RGB ``image``; sides must be multiples of ``size_multiple``."""
    from PIL import Image

    height, width = image.shape[:2]
    kwargs = _accepted(pipe, {
        "image": Image.fromarray(image), "mask_image": Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8)),
        "prompt": prompt, "negative_prompt": negative_prompt, "height": height, "width": width,
        "num_inference_steps": steps, "guidance_scale": guidance, "strength": strength,
        "generator": _generators(pipe, [seed])[0], "output_type": "np",
    })
    result = _to_uint8(pipe(**kwargs).images[0])
    if result.shape[:2] != (height, width):
        result = np.asarray(Image.fromarray(result).resize((width, height), Image.Resampling.LANCZOS))
    return result


def _to_uint8(image: Any) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return array[..., :3]

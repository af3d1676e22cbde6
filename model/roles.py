"""The model package's roles in the registry (``curation.models``), registered on import.

``model/__init__.py`` imports this module, so any ``import model...`` makes
``curation.models.load("video_backbone", ...)`` work; curation itself never imports
``model``. ``python -m model.roles`` lists every role, curation's and model's.
"""

from __future__ import annotations

from curation.models import Role, main, register

VIDEO_BACKBONE = register(Role(
    name="video_backbone",
    default="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
    loader="model.pipeline:load_components",
    tiny="model.tiny:tiny_components",
    doc="MAGREF sampling/training: Wan2.1 I2V transformer, VAE, UMT5, CLIP (diffusers layout)",
))

if __name__ == "__main__":  # curation's listing, now with model's roles registered
    raise SystemExit(main())

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

# Evaluation (model/evaluate). Its metrics also use curation's roles: face_dlib / face_analysis
# (ID-Sim), aesthetic, grounding + segmenter (subject regions), captioner (NaturalScore judge).
DINO = register(Role(
    name="dino", default="facebook/dinov2-base",
    loader="model.evaluate.dino:load_dino", tiny="model.evaluate.dino:tiny_dino",
    doc="evaluation: DINO embeddings for Subj-Sim, Bg-Sim and NexusScore (Dinov2Model)"))
GME = register(Role(
    name="gme", default="Alibaba-NLP/gme-Qwen2-VL-2B-Instruct",
    loader="model.evaluate.judge:load_gme", tiny="curation.clips.caption:tiny_captioner",
    doc="evaluation: GmeScore, text-frame retrieval embeddings (GME, Qwen2-VL)"))
CURRICULARFACE = register(Role(
    name="curricularface", default="./curricularface",
    loader="model.evaluate.curricularface:load_curricularface",
    tiny="model.evaluate.curricularface:tiny_curricularface",
    doc="evaluation: OpenS2V FaceSim-Cur (CurricularFace IR-101; user-supplied weights file or folder)"))

if __name__ == "__main__":  # curation's listing, now with model's roles registered
    raise SystemExit(main())

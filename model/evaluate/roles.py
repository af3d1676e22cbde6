"""Evaluation's model roles in the registry (``curation.models``), registered on import.

Besides these, the metrics use curation's roles: ``face_dlib``/``face_analysis`` (ID-Sim),
``aesthetic``, ``grounding`` + ``segmenter`` (subject regions) and ``captioner`` (the
NaturalScore judge). ``python -m model.roles`` lists them all.
"""

from __future__ import annotations

from curation.models import Role, register

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
    loader="model.evaluate.faces:load_curricularface", tiny="model.evaluate.faces:tiny_curricularface",
    doc="evaluation: OpenS2V FaceSim-Cur (CurricularFace IR-101; user-supplied weights, not built in yet)"))

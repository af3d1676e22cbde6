"""What a ``samples`` row (Eq. 19) gives the model: reference images and their words.

Training and sampling must agree on this, so it is written once, here: faces first,
then objects, then the background (which grounds no word). ``use_variants`` takes the
generated variant I' where one exists, the paper's cure for copy-paste (B.4);
evaluation and re-generation use the originals.
"""

from __future__ import annotations

from typing import Any, NamedTuple

# MAGREF's canvas holds at most 8 references (a 4x2 grid, model/conditioning.py), the
# background included: a samples row never has more, and stage 4 varies no more.
MAX_REFERENCES = 8


class Reference(NamedTuple):
    image: bytes  # PNG
    word: str | None  # the caption's word for it, or None (background, unlabelled face)
    kind: str  # "face" | "object" | "background"


def sample_references(row: dict[str, Any], use_variants: bool = False) -> list[Reference]:
    """The references of one ``samples`` row, in canvas order."""
    refs: list[Reference] = []
    for kind in ("faces", "objects"):
        for item in row.get(kind) or []:
            image = (item.get("variant") if use_variants else None) or item.get("ref")
            if image:
                refs.append(Reference(image, item.get("label") or None, kind[:-1]))
    if row.get("background"):
        refs.append(Reference(row["background"], None, "background"))
    return refs

"""What a ``samples`` row (Eq. 19) gives the model: reference images and their words.

Training and sampling must agree on this, so it is written once, here: faces first,
then objects, then the background (which grounds no word). ``use_variants`` takes the
generated variant I' where one exists, the paper's cure for copy-paste (B.4);
evaluation and re-generation use the originals.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

# MAGREF's canvas holds at most 8 references (a 4x2 grid, model/conditioning.py), the
# background included: a samples row never has more, and stage 4 varies no more.
MAX_REFERENCES = 8


class Reference(NamedTuple):
    image: bytes  # PNG
    word: str | None  # the caption's word for it, or None (background, unlabelled face)
    kind: str  # "face" | "object" | "background"


def sample_references(row: dict[str, Any], use_variants: bool | Callable[[], bool] = False,
                      pick_face: Callable[[int, int], int] | None = None) -> list[Reference]:
    """The references of one ``samples`` row, in canvas order.

    ``use_variants`` may be a callable, asked once per subject that has a variant, in
    canvas order: training draws it from a seeded rng to pick the reference or its
    variant per subject (the cross-pair trick), and the order of the draws is this one.
    ``pick_face(k, n)`` chooses which of the ``n`` ranked faces of the k-th face reference
    to use (0 = ``ref``, then its ``crops``), asked only when there is a choice; without it
    every face is its best-ranked one. A crop without its own variant takes the identity's.
    """
    refs: list[Reference] = []
    for kind in ("faces", "objects"):
        for k, item in enumerate(row.get(kind) or []):
            ref, variant = item.get("ref"), item.get("variant")
            crops = [c for c in item.get("crops") or [] if c.get("ref")] if kind == "faces" else []
            if pick_face is not None and crops and ref:
                choices = [(ref, variant)] + [(c["ref"], c.get("variant") or variant) for c in crops]
                ref, variant = choices[pick_face(k, len(choices))]
            if callable(use_variants):
                take = bool(variant) and use_variants()
            else:
                take = use_variants
            image = (variant if take else None) or ref
            if image:
                refs.append(Reference(image, item.get("label") or None, kind[:-1]))
    if row.get("background"):
        refs.append(Reference(row["background"], None, "background"))
    return refs

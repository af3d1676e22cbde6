"""What a ``samples`` row (Eq. 19) gives the model: reference images and their words.

Training and sampling must agree on this, so it is written once, here: faces first,
then objects, then the background (which grounds no word). ``use_variants`` takes the
generated variant I' where one exists, the paper's cure for copy-paste (B.4);
evaluation and re-generation use the originals.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple


class Reference(NamedTuple):
    image: bytes  # PNG
    word: str | None  # the caption's word for it, or None (background, unlabelled face)
    kind: str  # "face" | "object" | "background"


def sample_references(row: dict[str, Any],
                      use_variants: bool | Callable[[], bool] = False) -> list[Reference]:
    """The references of one ``samples`` row, in canvas order.

    ``use_variants`` may be a callable, asked once per subject that has a variant, in
    canvas order: training draws it from a seeded rng to pick the reference or its
    variant per subject (the cross-pair trick), and the order of the draws is this one.
    """
    refs: list[Reference] = []
    for kind in ("faces", "objects"):
        for item in row.get(kind) or []:
            variant = item.get("variant")
            if callable(use_variants):
                take = bool(variant) and use_variants()
            else:
                take = use_variants
            image = (variant if take else None) or item.get("ref")
            if image:
                refs.append(Reference(image, item.get("label") or None, kind[:-1]))
    if row.get("background"):
        refs.append(Reference(row["background"], None, "background"))
    return refs

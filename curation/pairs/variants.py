"""Variants I' of face and object references from an image-editing model (Appendix B.4).

The paper's cure for copy-paste: the model sees a *changed* reference (another pose,
expression, light or setting) while the video shows the original, so it cannot just
paste the reference pixels into the frames. Each reference gets one instruction from a
small prompt bank for its kind; every instruction asks to keep the identity. The prompt
is chosen by a generator seeded from (``seed``, the reference's id), and the same
number seeds the editor, so a rerun, or a run on another cluster, makes the same variant,
and the row records both.

Rows in: ``kind`` ("face" / "object"; other kinds pass through), ``source_id``,
``label`` (the subject word, used in object prompts) and ``REF`` (the reference PNG;
objects are RGBA and are composited on white first, as the MAGREF canvas does).
Rows out: ``image`` (the variant PNG), ``prompt``, ``seed``, ``model``, ``params``,
``variant_source = "generated"``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from curation.envelope import put_column, run_isolated
from curation.images import decode_png, encode_png
from curation.models import load, resolve
from curation.operator import ActorPool, setting
from curation.pairs.generators import edit, fit_size, size_multiple

REF = "_ref"  # private column: the reference PNG the editor starts from
FACE, OBJECT, BACKGROUND = "face", "object", "background"
GENERATED, CROSS_CLIP = "generated", "cross_clip"

# Instructions in FLUX Kontext's style: say what changes and what must stay. No commas,
# so a list of them can be given with --set as well as in YAML.
FACE_PROMPTS = (
    "Turn the person's head slightly to the left while keeping the same face and identity",
    "Turn the person's head slightly to the right while keeping the same face and identity",
    "Make the person smile naturally; keep the same face and identity",
    "Give the person a surprised expression; keep the same face and identity",
    "Tilt the person's head slightly upward; keep the same face and identity",
    "Show the same person in soft warm evening light; keep the face unchanged",
    "Show the same person outdoors in a sunny park; keep the face unchanged",
    "Show the same person wearing different clothes; keep the face and hairstyle unchanged",
)
OBJECT_PROMPTS = (
    "Show the same {label} from a different angle on a plain white background; keep its exact appearance",
    "Rotate the {label} to show another side; keep its shape and colours and details",
    "Place the same {label} in a different everyday setting; keep its shape and colours and details",
    "Show the same {label} under soft daylight on a plain white background; keep its identity",
    "Show the same {label} in a different pose or position; keep its exact appearance",
    "Show the same {label} in a natural outdoor scene; keep its shape and colours and details",
)


@dataclass
class VariantsConfig:
    enabled: bool = setting(True, help="False: no generated variants (samples then carry only cross-clip ones)")
    scope: str = setting("used", help=
        '"used": the references a sample uses; "all": every kept object and selected face (B.4)')
    size: int = setting(512, help="a variant has about size x size pixels, at its reference's aspect ratio")
    steps: int = setting(28, help="FLUX.1-Kontext-dev's default")
    guidance: float = setting(2.5, help="Kontext's distilled guidance")
    seed: int = setting(0, help="base seed: each reference's seed comes from it and the reference's id")
    face_prompts: list[str] = field(default_factory=lambda: list(FACE_PROMPTS))
    object_prompts: list[str] = field(default_factory=lambda: list(OBJECT_PROMPTS))
    pool: ActorPool = setting(factory=lambda: ActorPool(actors=1, batch_size=1, num_cpus=0.5, num_gpus=0.75), help=
        "One reference per editor call by default: batched float math differs in the last bits, so only then is"
        " a rerun bit-identical. 0.75 GPU: the inpainter fits beside it.")

    def __post_init__(self) -> None:
        if self.scope not in ("used", "all"):
            raise ValueError(f"variants.scope must be 'used' or 'all', got {self.scope!r}")
        if self.size < 16 or self.steps < 1:
            raise ValueError(f"variants.size must be >= 16 and steps >= 1, got {self.size}, {self.steps}")
        if not self.face_prompts or not self.object_prompts:
            raise ValueError("variants.face_prompts and variants.object_prompts must not be empty")


def seed_for(base: int, *parts: str) -> int:
    """A 63-bit seed from a base seed and ids: stable across processes and Python versions."""
    digest = hashlib.blake2b(":".join([str(base), *parts]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def choose_prompt(config: VariantsConfig, kind: str, source_id: str, label: str | None) -> tuple[str, int]:
    """The instruction and the seed for one reference (the same seed drives the editor)."""
    seed = seed_for(config.seed, kind, source_id)
    bank = config.face_prompts if kind == FACE else config.object_prompts
    prompt = bank[int(np.random.default_rng(seed).integers(len(bank)))]
    return prompt.replace("{label}", (label or "object").strip() or "object"), seed


def on_white(image: np.ndarray) -> np.ndarray:
    """RGBA over white (what the MAGREF canvas does with a cut-out); RGB passes through."""
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 3:
        return image
    alpha = image[..., 3:4].astype(np.float32) / 255.0
    return (image[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)


class Variants:
    """GPU operator: one generated variant per live face/object row."""

    def __init__(self, config: VariantsConfig, models: Any = None, device: str | None = None):
        self.config = config
        self.model_name = resolve("editor", models)
        self.pipe = load("editor", models, device=device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return run_isolated(batch, self._generate)

    def _generate(self, live: pa.Table) -> pa.Table:
        rows = live.to_pylist()
        multiple = size_multiple(self.pipe)
        jobs: dict[tuple[int, int], list[dict]] = {}
        for row in rows:
            if row["kind"] not in (FACE, OBJECT):
                continue
            row[REF] = on_white(decode_png(row[REF]))
            row["prompt"], row["seed"] = choose_prompt(self.config, row["kind"], row["source_id"], row.get("label"))
            size = fit_size(row[REF].shape[1], row[REF].shape[0], self.config.size ** 2, multiple)
            jobs.setdefault(size, []).append(row)
        # One editor call per output size; the batch is the pool's batch_size (see the config).
        for size, members in sorted(jobs.items()):
            outs = edit(self.pipe, [r[REF] for r in members], [r["prompt"] for r in members],
                        [r["seed"] for r in members], size, self.config.steps, self.config.guidance)
            for row, out in zip(members, outs):
                row.update(image=encode_png(out), model=self.model_name, variant_source=GENERATED,
                           params=json.dumps({"width": size[0], "height": size[1], "steps": self.config.steps,
                                              "guidance": self.config.guidance}, sort_keys=True))
        return fill_columns(live, rows, OUTPUT_COLUMNS)


OUTPUT_COLUMNS = {"image": pa.binary(), "prompt": pa.string(), "seed": pa.int64(), "params": pa.string(),
                  "model": pa.string(), "variant_source": pa.string()}


def fill_columns(table: pa.Table, rows: list[dict], columns: dict[str, pa.DataType]) -> pa.Table:
    """Set ``columns`` of ``table`` from the (updated) row dicts it was read into."""
    for name, kind in columns.items():
        table = put_column(table, name, pa.array([row.get(name) for row in rows], kind))
    return table

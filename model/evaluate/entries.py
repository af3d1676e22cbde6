"""What is evaluated: one *entry* per generated video, with its references and prompt.

Three inputs give entries, all read with the sampler's own readers where they exist, so
evaluation sees the references exactly as generation did:

* a ``samples`` table (``model.sample --samples``) and the folder of videos named
  ``<sample_id>.mp4``: faces, objects and background from ``schemas.samples``;
* a release prompt file (``key@@prompt@@img1@@img2...``, ``word=path`` names a subject) and
  its output folder;
* OpenS2V-Eval's JSON ``{id: {img_paths, prompt, class_label, ...}}``, videos ``<id>.mp4``,
  image paths relative to the JSON's folder.

An entry that cannot be read (missing reference, unreadable image) still becomes an entry
with ``error`` set, so its rows say why and the other entries still score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from curation.images import decode_png, encode_png
from model.sample import (
    Job,
    SampleInputError,
    jobs_from_prompt_file,
    read_image,
)
from schemas.io import read_manifest
from schemas.samples import sample_references

FACE, OBJECT, BACKGROUND, SUBJECT = "face", "object", "background", "subject"
FORMATS = ("samples", "prompt_file", "opens2v")

ENTRY_SCHEMA = pa.schema([
    pa.field("entry_id", pa.string(), nullable=False),
    pa.field("video", pa.string(), nullable=False),
    pa.field("prompt", pa.string()),
    pa.field("refs", pa.list_(pa.struct([pa.field("image", pa.binary()), pa.field("label", pa.string()),
                                         pa.field("kind", pa.string())]))),
    pa.field("error", pa.string()),  # why the entry's references could not be read, if so
])


@dataclass
class Reference:
    image: np.ndarray  # RGB uint8
    label: str | None  # the subject's word (class label), None when unknown
    kind: str  # face | object | background | subject (kind unknown: any subject)


@dataclass
class Entry:
    key: str
    prompt: str
    video: Path
    refs: list[Reference] = field(default_factory=list)
    error: str | None = None

    def of_kind(self, *kinds: str) -> list[Reference]:
        return [r for r in self.refs if r.kind in kinds]


class EntryInputError(ValueError):
    """An evaluation input that cannot be read at all (the file itself): the user's to fix."""


def guess_format(path: str) -> str:
    """``samples`` for Parquet, ``opens2v`` for JSON, ``prompt_file`` otherwise."""
    p = Path(path)
    if p.is_dir() or p.suffix == ".parquet":
        return "samples"
    return "opens2v" if p.suffix == ".json" else "prompt_file"


def read_entries(path: str, videos: str, fmt: str | None = None) -> list[Entry]:
    """Entries of one input file; ``videos`` is the folder holding ``<key>.mp4``."""
    if not Path(path).exists():
        raise EntryInputError(f"evaluation input {path!r} does not exist")
    fmt = fmt or guess_format(path)
    if fmt == "samples":
        return from_samples(path, Path(videos))
    if fmt == "prompt_file":
        return _from_jobs(jobs_from_prompt_file(path, Path(videos)), Path(videos))
    if fmt == "opens2v":
        return from_opens2v(path, Path(videos))
    raise EntryInputError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _from_jobs(items: list[Job | tuple[str, str]], videos: Path) -> list[Entry]:
    """Prompt-file jobs: a ``word=path`` reference is that subject's (kind unknown), the word
    ``background`` marks the background reference."""
    out = []
    for item in items:
        if not isinstance(item, Job):
            out.append(Entry(item[0], "", videos / f"{item[0]}.mp4", error=item[1]))
            continue
        words = {index: word for word, index in item.subjects}
        refs = [Reference(_rgb(img), words.get(i), BACKGROUND if words.get(i) == "background" else SUBJECT)
                for i, img in enumerate(item.refs)]
        out.append(Entry(item.key, item.prompt, item.out, refs))
    return out


def from_samples(path: str, videos: Path) -> list[Entry]:
    """A samples table: references in canvas order with their kind (face/object/background)."""
    try:
        table = read_manifest(path, "samples")
    except (ValueError, OSError) as exc:
        raise EntryInputError(f"{path}: {exc}") from exc
    out = []
    for row in table.to_pylist():
        key = str(row["sample_id"])
        entry = Entry(key, row["caption"], videos / f"{key}.mp4")
        try:
            entry.refs = [Reference(decode_png(r.image, "RGB"), r.word, r.kind) for r in sample_references(row)]
        except (ValueError, OSError) as exc:
            entry.error = f"sample {key}: unreadable reference ({exc})"
        out.append(entry)
    return out


def from_opens2v(path: str, videos: Path) -> list[Entry]:
    """OpenS2V-Eval's JSON; a class label of a face-domain reference (``face``, ``man``,
    ``woman``, ``person``...) makes it a face reference, ``background`` the background."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise EntryInputError(f"{path}: not an OpenS2V-Eval JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise EntryInputError(f"{path}: expected {{id: {{img_paths, prompt, class_label}}}}")
    base = Path(path).parent
    out = []
    for key, item in data.items():
        entry = Entry(str(key), str(item.get("prompt", "")), videos / f"{key}.mp4")
        labels = list(item.get("class_label") or [])
        try:
            paths = item.get("img_paths")
            if not paths:
                raise SampleInputError(f"{path}: entry {key!r} has no img_paths")
            for i, rel in enumerate(paths):
                label = str(labels[i]).strip() if i < len(labels) else None
                image = read_image(base / rel, f"reference image {rel!r} of {key!r}")
                entry.refs.append(Reference(_rgb(image), label, kind_of_label(label)))
        except (SampleInputError, OSError) as exc:
            entry.error = str(exc)
        out.append(entry)
    return out


FACE_WORDS = {"face", "man", "woman", "person", "human", "boy", "girl", "people"}


def kind_of_label(label: str | None) -> str:
    if not label:
        return SUBJECT
    word = label.lower()
    if word == "background":
        return BACKGROUND
    return FACE if word in FACE_WORDS else OBJECT


# ---------------------------------------------------------------------------
# Entries as Arrow rows: how they travel to Ray workers (references as PNG bytes).

def to_table(entries: list[Entry]) -> pa.Table:
    rows = [{"entry_id": e.key, "video": str(e.video), "prompt": e.prompt, "error": e.error,
             "refs": [{"image": encode_png(r.image), "label": r.label, "kind": r.kind} for r in e.refs]}
            for e in entries]
    return pa.Table.from_pylist(rows, schema=ENTRY_SCHEMA)


def from_row(row: dict) -> Entry:
    refs = [Reference(decode_png(r["image"], "RGB"), r["label"], r["kind"]) for r in row.get("refs") or []]
    return Entry(row["entry_id"], row.get("prompt") or "", Path(row["video"]), refs, row.get("error"))


"""What is evaluated: one *entry* per generated video, with its references and prompt.

Three inputs give entries, all read with the sampler's own readers where they exist, so
evaluation sees the references exactly as generation did:

* a ``samples`` table (``model.sample --samples``) and the folder of videos named
  ``<sample_id>.mp4``: faces, objects and background from ``schemas.samples``;
* a release prompt file (``key@@prompt@@img1@@img2...``, ``word=path`` names a subject) and
  its output folder;
* OpenS2V-Eval's JSON ``{id: {img_paths, prompt, class_label, ...}}``, videos ``<id>.mp4``,
  image paths relative to the JSON's folder.

Reading is in two steps, so whoever plans the work never holds the images. ``index_entries``
makes the *index*: one small row per entry (id, video, prompt, and where its references
are: image files, or a samples row as file + row group + row, found by reading only the
``sample_id`` and ``caption`` columns of each row group). ``from_rows`` turns index rows
into entries with their images, in the task that scores them (one read of a row group's
reference columns serves all its rows in the batch). An entry that cannot be read (missing
reference, unreadable image) still becomes an entry with ``error`` set, so its rows say why
and the other entries still score.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image

from curation.images import decode_png, encode_png
from model.sample import SampleInputError, prompt_file_entries, read_image
from schemas.io import Location, list_parts
from schemas.samples import sample_references
from schemas.validate import SchemaError, validate

FACE, OBJECT, BACKGROUND, SUBJECT = "face", "object", "background", "subject"
FORMATS = ("samples", "prompt_file", "opens2v")

_REF_FILE = pa.struct([pa.field("path", pa.string()), pa.field("label", pa.string()), pa.field("kind", pa.string())])
ENTRY_SCHEMA = pa.schema([
    pa.field("entry_id", pa.string(), nullable=False),
    pa.field("video", pa.string(), nullable=False),
    pa.field("prompt", pa.string()),
    # Where the references are; the index fills one of the three, ``to_table`` the first:
    pa.field("refs", pa.list_(pa.struct([pa.field("image", pa.binary()), pa.field("label", pa.string()),
                                         pa.field("kind", pa.string())]))),  # PNG bytes (entries in memory)
    pa.field("ref_files", pa.list_(_REF_FILE)),  # image files (prompt file, OpenS2V JSON)
    pa.field("samples_file", pa.string()),  # a samples row: its Parquet file (path or URI),
    pa.field("samples_row_group", pa.int32()),  # its row group there,
    pa.field("samples_row", pa.int32()),  # and its row inside the row group
    pa.field("error", pa.string()),  # why the entry's references could not be read, if so
])
SAMPLES_INDEX_COLUMNS = ["sample_id", "caption"]  # all an index reads of a samples table
SAMPLES_REFERENCE_COLUMNS = ["sample_id", "faces", "objects", "background"]  # what the scoring task reads


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


def index_entries(path: str, videos: str, fmt: str | None = None) -> pa.Table:
    """The index of one input file (``ENTRY_SCHEMA`` rows, no image read); ``videos`` is the
    folder holding ``<key>.mp4``."""
    if not Path(path).exists():
        raise EntryInputError(f"evaluation input {path!r} does not exist")
    fmt = fmt or guess_format(path)
    if fmt == "samples":
        return index_samples(path, Path(videos))
    if fmt == "prompt_file":
        return _table([_prompt_row(item, Path(videos)) for item in prompt_file_entries(path)])
    if fmt == "opens2v":
        return index_opens2v(path, Path(videos))
    raise EntryInputError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")


def read_entries(path: str, videos: str, fmt: str | None = None) -> list[Entry]:
    """Every entry of one input file with its images (for a few; many go through the index)."""
    return list(iter_entries(index_entries(path, videos, fmt)))


def iter_entries(index: pa.Table, chunk: int = 32) -> Iterator[Entry]:
    """The index's entries with their images, ``chunk`` at a time (memory bounded by the chunk)."""
    for batch in index.to_batches(max_chunksize=chunk):
        yield from from_rows(batch.to_pylist())


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ENTRY_SCHEMA)


def _prompt_row(item: tuple, videos: Path) -> dict:
    """A prompt-file line: a ``word=path`` reference is that subject's (kind unknown), the word
    ``background`` marks the background reference."""
    if len(item) == 2:
        return {"entry_id": item[0], "video": str(videos / f"{item[0]}.mp4"), "prompt": "", "error": item[1]}
    key, prompt, images = item
    files = [{"path": str(image), "label": word or None, "kind": BACKGROUND if word == "background" else SUBJECT}
             for word, image in images]
    return {"entry_id": key, "video": str(videos / f"{key}.mp4"), "prompt": prompt, "ref_files": files}


def index_samples(path: str, videos: Path) -> pa.Table:
    """A samples table (file or folder): per row group, only ``sample_id`` and ``caption``."""
    loc = Location.of(path)
    try:
        files = list_parts(loc) if loc.fs.get_file_info(loc.path).type == pafs.FileType.Directory else [loc.path]
        pieces = []
        for file in files:
            fragment = pads.ParquetFileFormat().make_fragment(file, filesystem=loc.fs)
            fragment.ensure_complete_metadata()
            validate(fragment.physical_schema.empty_table(), "samples", source=file)  # names and types, footer only
            uri = Location(loc.fs, file).uri()
            for piece in fragment.split_by_row_group():
                part = piece.to_table(columns=SAMPLES_INDEX_COLUMNS, schema=fragment.physical_schema)
                keys = part.column("sample_id").cast(pa.string())
                n = part.num_rows
                pieces.append(pa.table({
                    "entry_id": keys,
                    "video": pa.array([str(videos / f"{k}.mp4") for k in keys.to_pylist()], pa.string()),
                    "prompt": part.column("caption"),
                    "samples_file": pa.array([uri] * n, pa.string()),
                    "samples_row_group": pa.array([piece.row_groups[0].id] * n, pa.int32()),
                    "samples_row": pa.array(np.arange(n, dtype=np.int32)),
                }))
    except (SchemaError, pa.ArrowInvalid, OSError) as exc:
        raise EntryInputError(f"{path}: {exc}") from exc
    if not pieces:
        return ENTRY_SCHEMA.empty_table()
    table = pa.concat_tables(pieces)
    missing = [f for f in ENTRY_SCHEMA if f.name not in table.column_names]
    for f in missing:
        table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    return table.select(ENTRY_SCHEMA.names).cast(ENTRY_SCHEMA)


def index_opens2v(path: str, videos: Path) -> pa.Table:
    """OpenS2V-Eval's JSON; a class label of a face-domain reference (``face``, ``man``,
    ``woman``, ``person``...) makes it a face reference, ``background`` the background."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise EntryInputError(f"{path}: not an OpenS2V-Eval JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise EntryInputError(f"{path}: expected {{id: {{img_paths, prompt, class_label}}}}")
    base = Path(path).parent
    rows = []
    for key, item in data.items():
        row = {"entry_id": str(key), "video": str(videos / f"{key}.mp4"), "prompt": str(item.get("prompt", ""))}
        labels = list(item.get("class_label") or [])
        paths = item.get("img_paths")
        if not paths:
            row["error"] = f"{path}: entry {key!r} has no img_paths"
        else:
            row["ref_files"] = [{"path": str(base / rel), "label": label, "kind": kind_of_label(label)}
                                for i, rel in enumerate(paths)
                                for label in [str(labels[i]).strip() if i < len(labels) else None]]
        rows.append(row)
    return _table(rows)


def from_rows(rows: list[dict]) -> list[Entry]:
    """Index rows -> entries with their images; a samples row group is read once for all its rows."""
    entries = [Entry(r["entry_id"], r.get("prompt") or "", Path(r["video"]), error=r.get("error")) for r in rows]
    groups: dict[tuple[str, int], list[int]] = {}
    for i, row in enumerate(rows):
        if entries[i].error:
            continue
        if row.get("refs"):
            entries[i].refs = [Reference(decode_png(r["image"], "RGB"), r["label"], r["kind"]) for r in row["refs"]]
        elif row.get("ref_files"):
            _read_files(entries[i], row["ref_files"])
        elif row.get("samples_file") is not None:
            groups.setdefault((row["samples_file"], row["samples_row_group"]), []).append(i)
    for (file, group), members in groups.items():
        try:
            loc = Location.of(file)
            with loc.fs.open_input_file(loc.path) as handle:
                table = pq.ParquetFile(handle).read_row_group(group, columns=SAMPLES_REFERENCE_COLUMNS)
        except (pa.ArrowInvalid, OSError) as exc:
            for i in members:
                entries[i].error = f"sample {entries[i].key}: unreadable samples file {file} ({exc})"
            continue
        for i in members:
            _samples_refs(entries[i], table, rows[i]["samples_row"], file)
    return entries


def _read_files(entry: Entry, files: list[dict]) -> None:
    try:
        entry.refs = [Reference(_rgb(read_image(f["path"], f"reference image {f['path']!r} of {entry.key!r}")),
                                f["label"], f["kind"]) for f in files]
    except (SampleInputError, OSError) as exc:
        entry.refs, entry.error = [], str(exc)


def _samples_refs(entry: Entry, table: pa.Table, row: int, file: str) -> None:
    """References in canvas order with their kind (face/object/background)."""
    if row >= table.num_rows or table.column("sample_id")[row].as_py() != entry.key:
        entry.error = f"sample {entry.key}: {file} changed since it was indexed (row {row} is another sample)"
        return
    record = table.slice(row, 1).to_pylist()[0]
    try:
        entry.refs = [Reference(decode_png(r.image, "RGB"), r.word, r.kind) for r in sample_references(record)]
    except (ValueError, OSError) as exc:
        entry.error = f"sample {entry.key}: unreadable reference ({exc})"


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


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
    """Entries already in memory as index rows carrying their PNGs (a few; the CLI's and tests')."""
    rows = [{"entry_id": e.key, "video": str(e.video), "prompt": e.prompt, "error": e.error,
             "refs": [{"image": encode_png(r.image), "label": r.label, "kind": r.kind} for r in e.refs]}
            for e in entries]
    return _table(rows)


def from_row(row: dict) -> Entry:
    return from_rows([row])[0]

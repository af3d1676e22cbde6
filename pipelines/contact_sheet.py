"""The contact sheet of a run: one self-contained HTML file to look at what a run made.

    python -m pipelines.inspect_run --run-dir RUN --html out.html [--html-samples 100] [--per-reason 4]

Per sample a card: a strip of the clip's frames, the caption with its subject words
highlighted, each reference beside its variant (with where the variant came from), the
background, and the provenance. Then what was dropped: clips, objects, faces, stage-4
rows and errors, a few per reason, each with its picture and numbers. Every image is
inlined as a data URI, so the file opens from disk with no server and can be mailed.

Only the rows shown are read with their images: ids and statuses are read first, then
the pictures of the chosen rows (Parquet column projection + a filter), so a sheet of a
large run costs what it shows.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as pads

from curation.pages import STYLE as _STYLE
from curation.pages import data_uri
from curation.pages import img_tag as _img
from curation.thumbnails import clip_strip
from pipelines.ledger import RunDir
from schemas.tables import KEPT

CARD_CLASS = "sample-card"
# Counts what the browser really rendered once the page loaded: cards, and images whose
# data decoded (a broken one has no natural width). A test reads these from Chromium's DOM.
_SCRIPT = """
window.addEventListener('load', function () {
  const images = Array.from(document.images);
  document.body.dataset.cardsRendered = document.querySelectorAll('.sample-card').length;
  document.body.dataset.imagesDecoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesBroken = images.filter(i => !(i.complete && i.naturalWidth > 0)).length;
});
"""


def highlight(caption: str, words: Iterable[str]) -> str:
    """The caption, HTML-escaped, with every subject word marked (whole words, any case)."""
    words = sorted({w for w in words if w}, key=len, reverse=True)
    if not words:
        return html.escape(caption)
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    out, last = [], 0
    for match in pattern.finditer(caption):
        out += [html.escape(caption[last:match.start()]), f"<mark>{html.escape(match.group(0))}</mark>"]
        last = match.end()
    return "".join(out) + html.escape(caption[last:])


def _strip(row: dict, frames: int) -> str:
    try:
        jpegs = clip_strip(row["uri"], int(row["start_frame"]), int(row["end_frame"]),
                           float(row["start_s"]), float(row["end_s"]), count=frames)
    except Exception as err:  # noqa: BLE001 - a moved or broken video must not break the sheet
        return f'<div class="missing">frames unavailable: {html.escape(str(err)[:200])}</div>'
    return '<div class="strip">' + "".join(f'<img src="{data_uri(j, "image/jpeg")}" alt="">' for j in jpegs) + "</div>"


def _reference(kind: str, item: dict) -> str:
    source = item.get("variant_source") or "none"
    label = item.get("label") or "(no word)"
    return (f'<figure class="ref {kind}"><div class="pair">{_img(item.get("ref"), "reference")}'
            f'<span title="reference, then its variant">&rarr;</span>{_img(item.get("variant"), "variant")}</div><figcaption>{kind} · <b>{html.escape(label)}</b> · '
            f'<span class="badge {source}">{source}</span><br><code>{html.escape(item.get("source_id") or "")}</code>'
            f'</figcaption></figure>')


def sample_card(row: dict, frames: int = 6) -> str:
    references = [_reference("face", f) for f in row.get("faces") or []]
    references += [_reference("object", o) for o in row.get("objects") or []]
    references.append(f'<figure class="ref background">{_img(row.get("background"), "background", 192)}'
                      f'<figcaption>background<br><code>{html.escape(row.get("background_id") or "none")}</code>'
                      f'</figcaption></figure>')
    provenance = json.dumps(json.loads(row["provenance"] or "{}"), indent=2, sort_keys=True)
    return (f'<article class="{CARD_CLASS}" id="{html.escape(row["sample_id"])}" '
            f'data-sample-id="{html.escape(row["sample_id"])}">'
            f'<h3>{html.escape(row["sample_id"])}</h3>'
            f'<div class="meta">{html.escape(row["uri"])} · frames {row["start_frame"]}-{row["end_frame"]}'
            f' · {row.get("fps") or 0:.3g} fps · words: {html.escape(", ".join(row.get("subject_words") or []))}</div>'
            f'{_strip(row, frames)}<p class="caption">{highlight(row["caption"], row.get("subject_words") or [])}</p>'
            f'<div class="refs">{"".join(references)}</div>'
            f'<details><summary>provenance</summary><pre>{html.escape(provenance)}</pre></details></article>')


# --------------------------------------------------------------------------- reading only what is shown


def _dataset(run: RunDir, kind: str) -> pads.Dataset | None:
    folder = run.table(kind)
    if not folder.exists():
        return None
    return pads.dataset(folder.path, filesystem=folder.fs, format="parquet")


def _read(run: RunDir, kind: str, columns: list[str], where: Any = None) -> list[dict]:
    dataset = _dataset(run, kind)
    if dataset is None:
        return []
    names = [c for c in columns if c in dataset.schema.names]
    return dataset.to_table(columns=names, filter=where).to_pylist()


def dropped_rows(run: RunDir, kind: str, key: str, columns: list[str], per_reason: int) -> dict[str, tuple[int, list[dict]]]:
    """{reason: (how many, a few rows with ``columns``)} for rows whose status is not kept."""
    not_kept = pc.field("status") != KEPT
    statuses = _read(run, kind, [key, "status"], not_kept)
    by_reason: dict[str, list[str]] = {}
    for row in statuses:
        by_reason.setdefault(row["status"], []).append(row[key])
    if not by_reason:
        return {}
    chosen = [i for ids in by_reason.values() for i in sorted(ids)[:per_reason]]
    rows = {r[key]: r for r in _read(run, kind, [key, "status", *columns], pc.field(key).isin(chosen))}
    return {reason: (len(ids), [rows[i] for i in sorted(ids)[:per_reason] if i in rows])
            for reason, ids in sorted(by_reason.items())}


def _dropped_section(title: str, groups: dict[str, tuple[int, list[dict]]], render) -> str:
    if not groups:
        return ""
    parts = [f"<h3>{html.escape(title)}</h3>"]
    for reason, (count, rows) in groups.items():
        parts.append(f'<h4>{html.escape(reason)}: {count}</h4><div class="dropped" data-reason="{html.escape(reason)}">'
                     + "".join(render(r) for r in rows) + "</div>")
    return "".join(parts)


def _numbers(row: dict, names: Iterable[str]) -> str:
    shown = [f"{n}={row[n]:.3g}" if isinstance(row.get(n), float) else f"{n}={row[n]}"
             for n in names if row.get(n) is not None]
    return html.escape(" · ".join(shown))


def contact_sheet(run: RunDir, books_text: str = "", max_samples: int = 100, per_reason: int = 4,
                  frames: int = 6) -> str:
    """The whole HTML document for ``run``."""
    dataset = _dataset(run, "samples")
    total = dataset.count_rows() if dataset is not None else 0
    samples = dataset.head(max_samples).to_pylist() if dataset is not None else []
    samples.sort(key=lambda r: r["sample_id"])
    cards = "".join(sample_card(row, frames) for row in samples)

    clip_cols = ["uri", "start_frame", "end_frame", "start_s", "end_s", "motion", "aesthetic"]
    clips = _dropped_section("clips", dropped_rows(run, "clips", "clip_id", clip_cols, per_reason), lambda r: (
        f'<figure>{_strip(r, 3)}<figcaption><code>{html.escape(r["clip_id"])}</code><br>'
        f'{_numbers(r, ("motion", "aesthetic"))}</figcaption></figure>'))
    objects = _dropped_section("objects", dropped_rows(
        run, "objects", "object_id", ["label", "score", "ref", "area", "solidity", "face_iou"], per_reason), lambda r: (
        f'<figure>{_img(r.get("ref"), r["object_id"])}<figcaption><b>{html.escape(r.get("label") or "")}</b> '
        f'{_numbers(r, ("score", "area", "solidity", "face_iou"))}<br><code>{html.escape(r["object_id"])}</code>'
        f'</figcaption></figure>'))
    faces = _dropped_section("faces", dropped_rows(
        run, "faces", "face_id", ["crop", "det_score", "yaw", "pitch", "roll", "blur"], per_reason), lambda r: (
        f'<figure>{_img(r.get("crop"), r["face_id"])}<figcaption>{_numbers(r, ("det_score", "yaw", "pitch", "roll", "blur"))}'
        f'<br><code>{html.escape(r["face_id"])}</code></figcaption></figure>'))
    pairs = _dropped_section("stage 4 references", dropped_rows(
        run, "pairs", "pair_id", ["kind", "mask", "params"], per_reason), lambda r: (
        f'<figure>{_img(r.get("mask"), "removed region")}<figcaption>{html.escape(r.get("kind") or "")} '
        f'{html.escape(r.get("params") or "")}<br><code>{html.escape(r["pair_id"])}</code></figcaption></figure>'))
    cross = _dropped_section("cross-clip pairs", dropped_rows(
        run, "cross_pairs", "pair_id", ["clip_a", "clip_b", "similarity"], per_reason), lambda r: (
        f'<figure><figcaption>{_numbers(r, ("similarity",))}<br><code>{html.escape(r["clip_a"])}</code><br>'
        f'<code>{html.escape(r["clip_b"])}</code></figcaption></figure>'))
    errors = _errors_section(run, per_reason)
    title = html.escape(run.root.uri())
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>magref run {title}</title>'
            f'<style>{_STYLE}</style></head><body data-samples-total="{total}" data-samples-shown="{len(samples)}">'
            f'<h1>magref run <code>{title}</code></h1><pre>{html.escape(books_text)}</pre>'
            f'<h2>Samples ({len(samples)} shown of {total})</h2>{cards or "<p>No samples yet.</p>"}'
            f'<h2>Dropped, a few per reason</h2>{clips}{objects}{faces}{pairs}{cross}{errors or ""}'
            f'<script>{_SCRIPT}</script></body></html>')


def _errors_section(run: RunDir, per_reason: int) -> str:
    rows = _read(run, "errors", ["stage", "input", "error_type", "message"])
    groups: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: (r["stage"], r["error_type"], r["input"])):
        groups.setdefault(f'{row["stage"]}: {row["error_type"]}', []).append(row)
    if not groups:
        return ""
    items = "".join(f'<h4>{html.escape(reason)}: {len(group)}</h4><ul>' + "".join(
        f'<li><code>{html.escape(r["input"])}</code>: {html.escape(r["message"][:300])}</li>'
        for r in group[:per_reason]) + "</ul>" for reason, group in groups.items())
    return f"<h3>errors</h3>{items}"

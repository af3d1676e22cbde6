"""``--html``: one self-contained page, per video its frames beside its references and its scores.

Rendered with the contact sheet's style and image helpers (``curation/pages.py``); every
image is a data URI, so the file opens from disk. Frames are read again here (6 per video,
thumbnails), so the page costs what it shows.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from curation.images import encode_png
from curation.pages import STYLE, data_uri, img_tag
from curation.thumbnails import encode_jpeg
from model.evaluate.entries import Entry
from model.evaluate.summary import summary_text
from model.evaluate.video import read_video

CARD = "eval-card"


def _frames(entry: Entry, count: int) -> str:
    try:
        frames = read_video(entry.video, count).sampled
    except Exception as exc:  # noqa: BLE001 - a missing video is shown, not fatal
        return f'<div class="missing">frames unavailable: {html.escape(str(exc)[:200])}</div>'
    return '<div class="strip">' + "".join(f'<img src="{data_uri(encode_jpeg(f), "image/jpeg")}" alt="">'
                                           for f in frames) + "</div>"


def _scores(rows: list[dict[str, Any]]) -> str:
    cells = []
    for r in rows:
        shown = f"{r['value']:.4f}" if r["value"] is not None else html.escape(r["status"])
        cells.append(f'<tr><td>{html.escape(r["metric"])}</td><td title="{html.escape(r.get("detail") or "")}">'
                     f'{shown}</td><td class="meta">{html.escape(r.get("model") or "")}</td></tr>')
    return "<table>" + "".join(cells) + "</table>"


def card(entry: Entry, rows: list[dict[str, Any]], frames: int = 6) -> str:
    refs = "".join(f'<figure>{img_tag(encode_png(r.image), r.label or r.kind)}<figcaption>{html.escape(r.kind)} · '
                   f'<b>{html.escape(r.label or "")}</b></figcaption></figure>' for r in entry.refs)
    error = f'<div class="missing">{html.escape(entry.error)}</div>' if entry.error else ""
    return (f'<article class="sample-card {CARD}" data-entry-id="{html.escape(entry.key)}"><h3>{html.escape(entry.key)}</h3>'
            f'<div class="meta">{html.escape(str(entry.video))}</div>{error}{_frames(entry, frames)}'
            f'<p class="caption">{html.escape(entry.prompt)}</p><div class="refs">{refs}</div>{_scores(rows)}</article>')


def render(entries: Iterable[Entry], rows: list[dict[str, Any]], summary: dict[str, Any], title: str = "evaluation") -> str:
    by_entry: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_entry.setdefault(row["entry_id"], []).append(row)
    cards = "".join(card(e, by_entry.get(e.key, [])) for e in entries)
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{STYLE} td{{padding:0 8px}}</style></head><body><h1>{html.escape(title)}</h1>'
            f'<pre>{html.escape(summary_text(summary))}</pre>{cards}</body></html>')

"""What every self-contained HTML page of the project shares: the style and inlined images.

The run's contact sheet (``pipelines/contact_sheet.py``) and the evaluation page
(``model/evaluate/page.py``) both render with these, so a reference looks the same in
both; ``model`` may not import ``pipelines``, hence this module under ``curation``.
"""

from __future__ import annotations

import base64
import html

from curation.thumbnails import thumbnail

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px} h2{margin-top:32px;border-bottom:1px solid #ccc}
.sample-card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px;margin:12px 0}
.sample-card h3{margin:0 0 4px;font-size:15px;font-family:monospace}
.meta{color:#666;font-size:12px}
.strip{display:flex;gap:2px;margin:8px 0;overflow-x:auto}
.strip img{height:72px}
.caption{overflow-wrap:anywhere} .caption mark{background:#ffe08a;padding:0 2px;border-radius:3px}
.refs{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;padding:6px;border:1px solid #eee;border-radius:4px;background:#fcfcfc}
figure .pair{display:flex;gap:4px;align-items:center}
figure img{max-height:128px;max-width:128px;background:repeating-conic-gradient(#eee 0 25%,#fff 0 50%) 0 0/12px 12px}
figcaption{font-size:12px;color:#444;max-width:280px}
.badge{display:inline-block;padding:0 4px;border-radius:3px;font-size:11px;background:#e3ecff}
.badge.cross_clip{background:#d9f5d9} .badge.none{background:#f6d5d5}
.dropped{display:flex;flex-wrap:wrap;gap:8px}
.missing{color:#a00;font-size:12px}
pre{background:#f2f2f2;padding:8px;overflow-x:auto;font-size:12px}
"""


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def img_tag(data: bytes | None, title: str = "", max_side: int = 128) -> str:
    """An ``<img>`` of PNG/JPEG bytes as a PNG thumbnail data URI (or a "none" marker)."""
    if not data:
        return '<span class="missing">none</span>'
    small, (width, height) = thumbnail(data, max_side)
    return f'<img src="{data_uri(small, "image/png")}" title="{html.escape(title)} ({width}x{height})" alt="">'

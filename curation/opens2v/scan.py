"""Where each key of an OpenS2V-5M part JSON lies in the file, found in one streaming pass.

A part is one JSON object ``{key: {metadata, word_tags, annotation}}`` of hundreds of MB.
The importer's driver must not hold it: ``scan_part`` reads it in chunks, parses one key's
value at a time with the standard library's C decoder (``JSONDecoder.raw_decode`` over a
sliding buffer, so strings and braces inside values are never mistaken for structure),
keeps only what the driver needs per key (its byte ``offset`` and ``length`` and the video
path that groups keys into tasks) and drops the value. Each task then reads its own keys'
bytes with ``read_span``. The driver holds one chunk and one value at a time (a value larger
than a chunk grows the buffer until it fits).

A file cut short (or broken) yields every key before the damage and then one ``Span`` with
an ``error`` naming the file and the byte offset where the unreadable rest begins; reading
stops there, since nothing after it can be located.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass

from curation.opens2v.layout import LayoutError

CHUNK = 8 << 20  # bytes read at a time
_DECODER = json.JSONDecoder()
_SPACE = " \t\r\n"
# bytes <-> text without loss, so a value's byte length is exact whatever its encoding errors
_ERRORS = "surrogateescape"


@dataclass(frozen=True)
class Span:
    """One key of a part: its value's bytes ``[offset, offset + length)`` and its video path, or
    an ``error`` (then ``offset`` is where the unreadable part begins)."""

    key: str
    offset: int
    length: int
    path: str = ""
    error: str | None = None


class _Buffer:
    """Text of a file read chunk by chunk. ``byte(at)`` is the file offset of character ``at``
    (asked in increasing order, so each character is measured once); ``compact`` forgets
    scanned text once a chunk's worth has piled up (not per key: that would copy the buffer
    once per key)."""

    def __init__(self, stream, chunk: int):
        self.stream, self.chunk = stream, chunk
        self.decoder = codecs.getincrementaldecoder("utf-8")(_ERRORS)
        self.text, self.eof = "", False
        self.mark, self.mark_byte = 0, 0  # a measured character and its byte offset

    def more(self) -> bool:
        """Read the next chunk (at least as much as is held: a value that outgrows the buffer
        is re-parsed O(log n) times, not once per chunk); False at the end of the file."""
        if self.eof:
            return False
        data = self.stream.read(max(self.chunk, len(self.text)))
        self.eof = not data
        self.text += self.decoder.decode(data, final=self.eof)
        return bool(data)

    def byte(self, at: int) -> int:
        self.mark_byte += len(self.text[self.mark:at].encode("utf-8", _ERRORS))
        self.mark = at
        return self.mark_byte

    def compact(self, at: int) -> int:
        """Drop the text before ``at`` when it is more than a chunk; returns ``at``'s new index."""
        if at < self.chunk:
            return at
        self.byte(at)
        self.text, self.mark = self.text[at:], 0
        return 0

    def skip(self, at: int) -> int:
        """The first non-space position from ``at``, reading on as needed (len(text) at the end)."""
        while True:
            while at < len(self.text) and self.text[at] in _SPACE:
                at += 1
            if at < len(self.text) or not self.more():
                return at

    def decode(self, at: int) -> tuple[object, int]:
        """One JSON value starting at ``at`` and where it ends, reading on while it is cut by the
        buffer's end (a value broken in the middle raises at once, without reading the rest)."""
        while True:
            try:
                return _DECODER.raw_decode(self.text, at)
            except json.JSONDecodeError as err:
                at_end = err.pos >= len(self.text) - 8 or err.msg.startswith("Unterminated string")
                if not at_end or not self.more():
                    raise


def scan_part(path: str, chunk: int | None = None) -> Iterator[Span]:
    """Every key of the part at ``path`` in file order, as ``Span`` s (see the module doc).

    Raises ``LayoutError`` when the file is not a JSON object at all."""
    with open(path, "rb") as stream:
        buf = _Buffer(stream, chunk or CHUNK)
        at = buf.skip(0)
        if at >= len(buf.text) or buf.text[at] != "{":
            raise LayoutError(f"{path}: not a JSON object of keys (starts with {buf.text[at:at + 20]!r})")
        at = buf.skip(at + 1)
        while at < len(buf.text) and buf.text[at] != "}":
            at = buf.compact(at)
            start = buf.byte(at)
            try:
                key, at = buf.decode(at)
            except json.JSONDecodeError as err:
                yield Span(f"@{start}", start, 0, error=f"{path}: from byte {start} on: a key name is cut off or "
                                                       f"broken ({err.msg}); the keys after it are not read")
                return
            at = buf.skip(at)
            if at >= len(buf.text) or buf.text[at] != ":":
                yield Span(str(key), start, 0, error=f"{path}: key {key!r} at byte {start}: cut off before its "
                                                    "value; the keys after it are not read")
                return
            at = buf.skip(at + 1)
            first = buf.byte(at)
            try:
                value, end = buf.decode(at)
            except json.JSONDecodeError as err:
                yield Span(str(key), first, 0, error=f"{path}: key {key!r}: its JSON value from byte {first} on is cut "
                                                     f"off or does not parse ({err.msg}); the keys after it are not read")
                return
            video = value.get("metadata", {}).get("path") if isinstance(value, dict) else None
            yield Span(str(key), first, buf.byte(end) - first, str(video or ""))
            at = buf.skip(end)
            if at < len(buf.text) and buf.text[at] == ",":
                at = buf.skip(at + 1)
        if at >= len(buf.text):  # no closing brace: the file is cut off after a whole value
            cut = buf.byte(at)
            yield Span(f"@{cut}", cut, 0, error=f"{path}: ends at byte {cut} without the part's closing brace: "
                                                "it is cut off, and keys after that byte are lost")


def read_span(path: str, offset: int, length: int) -> str:
    """The text of one key's value (a ``Span``'s bytes), for the task that imports it."""
    with open(path, "rb") as stream:
        stream.seek(offset)
        data = stream.read(length)
    if len(data) != length:
        raise LayoutError(f"{path}: bytes {offset}-{offset + length} are past the file's end (it changed since the scan)")
    return data.decode("utf-8", "replace")

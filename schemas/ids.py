"""Deterministic record ids: the same input always gets the same id.

Resume works by an anti-join on these ids, so they must not depend on run time,
worker, batch order or file path (the same video copied to two paths is one video).
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

_CHUNK = 8 << 20
ID_HEX = 24  # 96 bits: no collision in any corpus we can imagine, short enough to read


def content_hash(stream: BinaryIO) -> str:
    """BLAKE2b of a byte stream, read in chunks so a 10 GB video costs no memory."""
    digest = hashlib.blake2b(digest_size=ID_HEX // 2)
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def video_id_of(stream: BinaryIO) -> str:
    return content_hash(stream)


def clip_id(video_id: str, start_frame: int, end_frame: int) -> str:
    """A clip is a frame range [start, end) of one video."""
    return f"{video_id}-{start_frame:07d}-{end_frame:07d}"


def child_id(parent_id: str, kind: str, index: int) -> str:
    """Ids of things found inside a clip (objects, faces): parent + kind + index.

    The index must come from a deterministic order (e.g. detection order sorted by
    frame then score), which the operator that assigns it guarantees.
    """
    return f"{parent_id}-{kind}{index:03d}"


def object_id(clip_id_: str, index: int) -> str:
    return child_id(clip_id_, "o", index)


def face_id(clip_id_: str, index: int) -> str:
    return child_id(clip_id_, "f", index)


def sample_id(clip_id_: str, index: int = 0) -> str:
    return child_id(clip_id_, "s", index)


def variant_id(source_id: str, index: int = 0) -> str:
    """A generated variant I' of a face or object reference (``pairs`` table)."""
    return child_id(source_id, "v", index)


def background_id(clip_id_: str, index: int = 0) -> str:
    """A clip's background reference I^Bg (``pairs`` table)."""
    return child_id(clip_id_, "b", index)


def cross_pair_id(identity_a: str, identity_b: str) -> str:
    """Two identities of different clips, in sorted order so either side names the same pair."""
    first, second = sorted((identity_a, identity_b))
    return f"{first}~{second}"


def video_of(clip_id_: str) -> str:
    """The ``video_id`` part of a ``clip_id`` (see ``clip_id``: video id + frame range)."""
    return clip_id_.rsplit("-", 2)[0]

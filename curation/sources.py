"""Where videos come from: listing inputs and opening a uri, local or remote alike.

A uri is a local path or anything ``pyarrow.fs.FileSystem.from_uri`` understands
(``s3://``, ``gs://``, ``hdfs://``, ``file://``). Listing and opening go through one
code path so a job that works on a laptop folder works on a bucket.
"""

from __future__ import annotations

import fnmatch
import glob as globlib
import os
import posixpath
from typing import BinaryIO

import pyarrow.fs as pafs
import pyarrow.parquet as pq

LIST_SUFFIXES = (".txt", ".list", ".csv")


def split_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    return pafs.FileSystem.from_uri(uri)


def _join(fs: pafs.FileSystem, path: str, original: str) -> str:
    """Give a listed path back in the form the user wrote (local path or uri)."""
    if isinstance(fs, pafs.LocalFileSystem) and "://" not in original:
        return path
    scheme = original.split("://", 1)[0]
    return f"{scheme}://{path}"


def list_inputs(spec: str, extensions: tuple[str, ...] | None = None) -> list[str]:
    """Expand an input spec into a sorted list of unique video uris.

    ``spec`` is a directory (recursive), a glob (``**`` allowed), a text file with
    one uri per line (``#`` comments allowed), or a Parquet file with a ``uri``
    column. ``extensions`` keeps only those suffixes when walking a directory; by
    default every file is taken, so a non-video becomes an error row rather than a
    silent skip. Hidden files (``.name``) are skipped: they are tool litter.
    """
    if any(ch in spec for ch in "*?["):
        return _glob(spec)
    fs, path = split_uri(spec)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {spec!r}: no such file, folder or glob match")
    if info.type == pafs.FileType.Directory:
        found = []
        for entry in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
            if entry.type != pafs.FileType.File:
                continue
            relative = posixpath.relpath(entry.path, path)
            if any(part.startswith(".") for part in relative.split("/")):
                continue
            if extensions and not entry.path.lower().endswith(tuple(e.lower() for e in extensions)):
                continue
            found.append(_join(fs, entry.path, spec))
        return sorted(found)
    if path.endswith(".parquet"):
        table = pq.read_table(path, filesystem=fs)
        if "uri" not in table.column_names:
            raise ValueError(f"{spec}: a Parquet input list needs a 'uri' column; found {table.column_names}")
        return sorted(dict.fromkeys(u for u in table.column("uri").to_pylist() if u))
    if path.endswith(LIST_SUFFIXES):
        with fs.open_input_stream(path) as stream:
            lines = stream.read().decode("utf-8").splitlines()
        uris = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        base = posixpath.dirname(path)
        resolved = [u if ("://" in u or os.path.isabs(u)) else _join(fs, posixpath.join(base, u), spec)
                    for u in uris]
        return sorted(dict.fromkeys(resolved))
    return [spec]  # a single video file


def _glob(spec: str) -> list[str]:
    if "://" not in spec:
        return sorted(p for p in globlib.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(p))
    fs, pattern = pafs.FileSystem.from_uri(spec)
    root = pattern.split("*", 1)[0].rsplit("/", 1)[0]
    entries = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return sorted(_join(fs, e.path, spec) for e in entries
                  if e.type == pafs.FileType.File and fnmatch.fnmatch(e.path, pattern))


def open_binary(uri: str) -> BinaryIO:
    """A seekable binary file for ``uri`` (PyAV and hashing read from it)."""
    if "://" not in uri:
        return open(os.path.expanduser(uri), "rb")
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs.open_input_file(path)


def size_of(uri: str) -> int:
    fs, path = split_uri(uri)
    return fs.get_file_info(path).size

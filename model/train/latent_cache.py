"""The latent cache: what the cache job writes and what ``model.train --cache`` reads.

A cache is a folder (local or a pyarrow filesystem URI; the cache job's run directory):

    ROOT/cache.json            the data settings, base model and dtype it was built with
    ROOT/latents/              the index table (schema ``latents``): one row per entry
    ROOT/latent_files/xx/...   one safetensors entry per (sample_id, augmentation)
    ROOT/_ledger, errors/, run.json   the job's books, as every stage keeps them

The cache job (``pipelines/cache_latents.py``) runs two operators: ``ExampleBuilder`` on
CPU tasks decodes a sample's clip and composes its canvases, one row per augmentation
seed, and ``LatentEncoder`` on actors that hold VAE, UMT5 and CLIP (GPU when present)
encodes them and writes the entries. ``cache_samples`` does the same in one process, for
small sets. A cached run adopts the cache's data settings, since they are baked in.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

import model.roles  # noqa: F401 - registers video_backbone
from curation.envelope import apply_to_live, error_row, per_input, run_isolated, to_table
from curation.models import pick_device, resolve
from curation.operator import ActorPool, TaskPool
from model.train.data import (
    BadRecord,
    DataConfig,
    Example,
    attach_guidance,
    example_bytes,
    example_from_bytes,
    make_example,
)
from model.train.latents import ModelInputs, encode_examples, load_encoders, read_entry, write_entry
from model.train.samples_reader import SamplesTable
from schemas.io import Location, read_files, read_manifest, read_table, write_bytes, write_part
from schemas.tables import INPUT, schema_for

META = "cache.json"
EXAMPLE = "_example"  # private column: an encoded example between the two steps
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class DecodeStep:
    """Step 1, CPU tasks: decode each sample's clip, compose its canvases."""

    pool: TaskPool = field(default_factory=lambda: TaskPool(batch_size=1, num_cpus=1.0))


@dataclass
class EncodeStep:
    """Step 2, actors with VAE + UMT5 + CLIP: encode and write the entries."""

    # float type of the stored tensors: bfloat16 halves the cache, float32 matches online training
    dtype: str = "bfloat16"
    pool: ActorPool = field(default_factory=lambda: ActorPool(actors=1, batch_size=1, num_cpus=1.0,
                                                               num_gpus=1.0))

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")


@dataclass
class CacheConfig:
    # what an example is (model.train.data.DataConfig); augmentations: entries per sample
    data: DataConfig = field(default_factory=lambda: DataConfig(augmentations=2))
    decode: DecodeStep = field(default_factory=DecodeStep)
    encode: EncodeStep = field(default_factory=EncodeStep)


class CachedDataset:
    """The cache as a dataset: same sample order and augmentation seeds as the raw table.

    ``index`` is the cache job's index table (``sample_id``, ``augmentation``, ``path``), kept
    as Arrow arrays sorted by id, then augmentation: a few bytes per entry and no Python
    object per entry, whatever the cache's size. Sample ids are sorted, as ``SamplesTable``
    sorts them, so index i is the same sample in a cached and an uncached run over the same
    good samples.
    """

    def __init__(self, root: str, index: pa.Table) -> None:
        self.root = root
        index = index.select(["sample_id", "augmentation", "path"])
        index = index.take(pc.sort_indices(index, [("sample_id", "ascending"), ("augmentation", "ascending")]))
        ids = index.column("sample_id").combine_chunks().cast(pa.string())
        self._augmentation = index.column("augmentation").to_numpy().astype(np.int64)
        self._path = index.column("path").combine_chunks()
        # Where each distinct id's entries start (ids are sorted, so runs of equal ids).
        changes = np.flatnonzero(pc.not_equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False)) + 1 \
            if len(ids) > 1 else np.zeros(0, np.int64)
        self._starts = np.concatenate([[0], changes, [len(ids)]]).astype(np.int64) if len(ids) else np.zeros(1, np.int64)
        self.ids: pa.Array = ids.take(pa.array(self._starts[:-1]))

    def __len__(self) -> int:
        return len(self.ids)

    def sample_id(self, index: int) -> str:
        return self.ids[index].as_py()

    def keys(self) -> list[tuple[str, int]]:
        """Every (sample_id, augmentation) the cache holds, sorted (a Python list: for inspection)."""
        return [(self.sample_id(i), int(a)) for i in range(len(self))
                for a in self._augmentation[self._starts[i]:self._starts[i + 1]]]

    def path_of(self, index: int, augmentation: int) -> str | None:
        """The entry's path relative to the cache root, or ``None`` when it is not cached."""
        start, end = int(self._starts[index]), int(self._starts[index + 1])
        found = np.flatnonzero(self._augmentation[start:end] == augmentation)
        return self._path[start + int(found[0])].as_py() if len(found) else None

    def load(self, index: int, augmentation: int) -> "CachedExample":
        sample_id = self.sample_id(index)
        relative = self.path_of(index, augmentation)
        if relative is None:
            raise BadRecord("not_cached", sample_id, f"augmentation {augmentation} is not in the cache")
        try:
            return CachedExample(read_entry(self.root, relative))
        except (OSError, ValueError, KeyError) as exc:
            raise BadRecord("unreadable_cache", sample_id, f"cache entry {relative!r}: {exc}") from exc


@dataclass
class CachedExample:
    """A cache entry as the batcher sees it: a bucket key and the model inputs."""

    inputs: ModelInputs

    @property
    def bucket(self) -> tuple[int, ...]:
        return tuple(self.inputs.latents.shape[2:])

    @property
    def sample_id(self) -> str:
        return self.inputs.sample_ids[0]


def read_meta(root: str) -> dict[str, Any]:
    """``cache.json``: the data settings and base model the cache was built with."""
    loc = Location.of(root).join(META)
    if not loc.exists():
        raise FileNotFoundError(f"{root} has no {META}: not a latent cache (build one with "
                                f"pipelines/cache_latents.py)")
    with loc.fs.open_input_stream(loc.path) as stream:
        return json.loads(stream.read().decode())


def write_meta(root: str, meta: dict[str, Any]) -> None:
    """The cache's settings, atomically: a killed writer never leaves a half ``cache.json``."""
    write_bytes(Location.of(root).join(META), json.dumps(meta, indent=1, sort_keys=True).encode())


def open_cache(root: str) -> tuple[dict[str, Any], CachedDataset]:
    """The cache's settings and its entries (the ``latents`` index table under ``root``)."""
    meta = read_meta(root)
    index = read_table(Location.of(root).join("latents"), "latents",
                       columns=["sample_id", "augmentation", "path"])
    if not index.num_rows:
        raise FileNotFoundError(f"{root}: the latent cache has no entries yet")
    return meta, CachedDataset(root, index)


def cache_meta(data: DataConfig, base: str, dtype: str) -> dict[str, Any]:
    """What ``cache.json`` records; a cached run adopts these data settings."""
    if data.augmentations is None:
        raise ValueError("a latent cache holds a fixed number of augmentations per sample: "
                         "set data.augmentations")
    # v2: data.first_frame (a v1 cache's targets start with the clip's own frame)
    return {"format": "magref-latent-cache-v2", "data": json.loads(json.dumps(asdict(data))),
            "base": base, "dtype": dtype}


def claim(root: str, meta: dict[str, Any]) -> None:
    """Write ``cache.json``, or check that an existing cache was built the same way."""
    try:
        found = read_meta(root)
    except FileNotFoundError:
        write_meta(root, meta)
        return
    differs = sorted(k for k in set(meta) | set(found) if meta.get(k) != found.get(k))
    if differs:
        raise ValueError(f"{root} holds a cache built with other settings ({', '.join(differs)}: "
                         f"{ {k: found.get(k) for k in differs} }); use another folder or the same settings")


def index_row(example: Example, path: str, size: int) -> dict[str, Any]:
    width, height, frames = example.bucket
    return {"entry_id": f"{example.sample_id}.{example.augmentation}", "sample_id": example.sample_id,
            "augmentation": example.augmentation, "path": path, "width": width, "height": height,
            "frames": frames, "bytes": size}


def encode_and_write(pipe: Any, example: Example, root: str, dtype: str) -> dict[str, Any]:
    """Encode one example with the frozen encoders and write its entry; returns its index row."""
    attach_guidance(example, pipe.tokenizer)
    path, size = write_entry(root, encode_examples(pipe, [example]), DTYPES[dtype])
    return index_row(example, path, size)


def cache_samples(manifest: str, pipe: Any, root: str, data: DataConfig, base: str,
                  dtype: str = "float32") -> dict[str, int]:
    """Cache a samples table in this process (small sets and tests; the Ray job is
    ``pipelines/cache_latents.py``). Returns counts of entries written and rows skipped."""
    claim(root, cache_meta(data, base, dtype))
    table = SamplesTable(manifest)
    index, skipped = [], table.skipped_rows
    for i in range(len(table)):
        try:
            row = table.row(i)
            index += [encode_and_write(pipe, make_example(row, a, data), root, dtype)
                      for a in range(data.augmentations)]
        except BadRecord:
            skipped += 1
    if index:
        write_part(pa.Table.from_pylist(index, schema=schema_for("latents")),
                   Location.of(root).join("latents"), "latents", name="local")
    return {"entries": len(index), "skipped": skipped}


SAMPLE_FILES = "_samples_files"  # private column: the samples files holding a sample's row


class ExampleBuilder:
    """CPU step of the cache job: sample ids -> one row per (sample, augmentation) example.

    Reads its samples' full rows itself (filter pushed down to Parquet), so reference PNGs
    never pass through the driver, and only from the files the driver's index names for
    them (column ``SAMPLE_FILES``), so a task opens O(1) files, not every part of the
    table. A sample that cannot become an example is an error row.
    """

    def __init__(self, config: DecodeStep, data: DataConfig, samples: str) -> None:
        self.data, self.samples = data, samples

    def __call__(self, batch: pa.Table) -> pa.Table:
        return apply_to_live(batch, self._build)

    def _build(self, live: pa.Table) -> pa.Table:
        ids = live.column(INPUT).to_pylist()
        where = [("sample_id", "in", ids)]
        if SAMPLE_FILES in live.column_names:
            files = sorted({f for found in live.column(SAMPLE_FILES).to_pylist() for f in found or []})
            found = read_files(Location.of(self.samples).fs, files, "samples", filter=where)
        else:
            found = read_manifest(self.samples, "samples", filter=where)
        rows = {r["sample_id"]: r for r in found.to_pylist()}

        def build(row: dict[str, Any]) -> list[dict[str, Any]]:
            return [{EXAMPLE: example_bytes(make_example(row, a, self.data)), "status": "kept"}
                    for a in range(self.data.augmentations)]

        out = per_input([rows[i] for i in ids if i in rows], "sample_id", build)
        out += [error_row(i, KeyError(f"sample {i} is not in {self.samples}")) for i in ids if i not in rows]
        return to_table(out)


class LatentEncoder:
    """Model step of the cache job: encode each example (VAE, UMT5, CLIP) and write its entry."""

    def __init__(self, config: EncodeStep, root: str, models: Any = None, device: str | None = None) -> None:
        self.config, self.root = config, root
        self.pipe = load_encoders(resolve("video_backbone", models), pick_device(device))

    def __call__(self, batch: pa.Table) -> pa.Table:
        return run_isolated(batch, self._encode, schema_for("latents"))

    def _encode(self, live: pa.Table) -> pa.Table:
        rows = []
        for input_id, blob in zip(live.column(INPUT).to_pylist(), live.column(EXAMPLE).to_pylist()):
            row = encode_and_write(self.pipe, example_from_bytes(blob), self.root, self.config.dtype)
            rows.append({**row, INPUT: input_id, "status": "kept"})
        return to_table(rows, schema_for("latents"))

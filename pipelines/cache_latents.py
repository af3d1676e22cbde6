"""Latent cache: samples -> VAE latents, canvas conditions, UMT5 and CLIP states (musubi-style).

    python pipelines/cache_latents.py --run-dir RUN [--base tiny|DIR|HUB_ID] [--augmentations 4]
        [--frames 81] [--fps 16] [--bucket 832x480] [--set encode.dtype=float32] [--set encode.pool.actors=8]
    python -m model.train --cache RUN --base ... --out OUT     # then loads no VAE/UMT5/CLIP

The data options are ``python -m model.train``'s, spelled the same (``--frames``, ``--fps``,
``--min-frames``, ``--bucket``, ``--variant-prob``, ``--background-prob``, ``--no-shuffle-refs``,
``--caption-dropout``, ``--augmentations``; or ``--set data.KEY=VALUE``).
Reads RUN/samples (or --input), each ``sample_id`` once; the driver reads only the ids,
the CPU step reads its samples' rows itself, opening only the files an id index (one scan of
the ``sample_id`` column per job) names for them. For every sample and each augmentation seed
0..N-1 it decodes the clip and composes the canvas exactly as ``model.train`` does online
(``model.train.data``: same rng, same buckets), then an actor holding VAE, UMT5 and CLIP (a GPU
each when there are GPUs; the transformer is never loaded) encodes it and writes one
safetensors entry under RUN/latent_files/ and one row of the ``latents`` index table. A
sample that cannot be trained on (missing video, unreadable PNG, too short) is one
``errors`` row. ``RUN/cache.json`` records the data settings, base model and dtype; a
rerun with other settings is refused, a rerun with the same ones resumes.
"""

from __future__ import annotations

import sys

import model.roles  # noqa: F401 - registers the video_backbone role
from curation.models import resolve
from model.train.config import add_data_arguments, data_settings
from model.train.latent_cache import (
    SAMPLE_FILES,
    CacheConfig,
    ExampleBuilder,
    LatentEncoder,
    cache_meta,
    claim,
)
from pipelines.cli import Parser, UserError, cli
from pipelines.job import StageJob
from pipelines.lookup import files_for
from pipelines.stages import Stage
from pipelines.wiring import map_operator
from schemas.io import Location, file_index

CACHE = Stage("latents", "latents", "cache_latents", "samples", "sample_id",
              input_columns=("sample_id",), roles=("video_backbone",))


def main(argv: list[str] | None = None) -> int:
    flags = Parser(add_help=False, allow_abbrev=False)
    add_data_arguments(flags, None)  # model.train's data options, as --set data.* keys
    data, rest = flags.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    sets = [item for setting in data_settings(data) for item in ("--set", setting)]
    job = StageJob(CACHE, CacheConfig, __doc__, [*rest, *sets], models_flag="--base")
    cfg = job.config
    root = job.run.root.uri()
    samples = job.args.input or job.run.table("samples").uri()
    with job:
        try:
            claim(root, cache_meta(cfg.data, resolve("video_backbone", job.models), cfg.encode.dtype))
        except ValueError as exc:
            raise UserError(str(exc)) from None
        todo = job.pending(job.read_input())
        if todo.num_rows:  # each task reads only the files its samples are in (index: once per job)
            index = file_index(Location.of(samples), "samples", "sample_id")
            todo = todo.append_column(SAMPLE_FILES, files_for(todo.column("sample_id").combine_chunks(), index,
                                                              "sample_id"))
            ds = job.dataset(todo, rows_per_block=cfg.decode.pool.batch_size)
            ds = map_operator(ds, ExampleBuilder, cfg.decode.pool, config=cfg.decode, data=cfg.data,
                              samples=samples)
            ds = map_operator(ds, LatentEncoder, cfg.encode.pool, config=cfg.encode, root=root,
                              models=job.models)
            job.write(ds)
    return 0 if job.report.accounted else 1


if __name__ == "__main__":
    sys.exit(cli(main))

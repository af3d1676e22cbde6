"""Import an OpenS2V-5M part into a run, then assemble its samples (Eq. 19).

    python pipelines/import_opens2v.py --json PART.json --videos DIR [--backgrounds DIR] \\
        [--views DIR] [--pairs DIR] --run-dir RUN [--set opens2v.min_gme_score=0.3]
    python -m model.train --manifest RUN/samples ...

One input per key of the part (``imports`` table, ledger ``opens2v``). A task takes whole
videos' keys, builds their rows in ``curation/opens2v`` (video probe, clip with the
watermark crop, RGBA object cut-outs from the RLE masks, generated views and background as
``pairs``) and commits them under the chain's stage names (``probe``, ``clips``,
``objects``, ``pairs``), each commit skipping inputs that stage's ledger already holds,
then the key's ``imports`` row: a killed import resumes by key without duplicates. Which
inputs the chain's ledgers hold is read once per job, by one ``ChainLedgers`` actor that
tasks ask (never a scan of every ledger part per task, which grows with the run). The
pair lists (``--pairs``) become ``cross_pairs`` once every key is in; then
``stage4c_samples`` (the one assembly) writes ``samples``. A broken key (missing video,
RLE size not the crop's, mask index not in ``mask_map``, a truncated JSON) is an error row
naming the file and field; the rest import. Faces, by default, come from an InsightFace pass
over the people OpenS2V annotated: ``stage3_faces`` with ``faces.regions=person_boxes`` searches
only the boxes of each kept clip's objects labelled a person (``opens2v.person_labels``) on the
annotated frame, inside the watermark crop (boxes in source pixels), so faces have embeddings;
then ``stage4b_cross_pairs`` forms identities' cross pairs. The person masks stay ``objects``
(mask-only cut-outs). ``--models`` is passed on (``--models tiny`` for the generated pack);
``--set faces=false`` imports no faces. For other ``faces.*`` settings import with
``--set faces=false --set samples=false``, then run ``stage3_faces.py`` (with
``--set faces.regions=person_boxes``), ``stage4b_cross_pairs.py`` and ``stage4c_samples.py``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from curation.envelope import empty_row, error_row, to_table
from curation.faces import FacesConfig
from curation.faces.detector import check_weights
from curation.opens2v.layout import LayoutError, read_pair_lists
from curation.opens2v.references import (
    Folders,
    OpenS2VConfig,
    cross_pair_rows,
    import_keys,
)
from curation.opens2v.scan import scan_part
from curation.operator import setting
from pipelines import stage3_faces, stage4b_cross_pairs, stage4c_samples
from pipelines.cli import UserError, cli
from pipelines.job import StageJob
from pipelines.ledger import RunDir, block_hash, clean_orphans, commit
from pipelines.stages import IMPORT_CROSS, IMPORT_OPENS2V
from schemas.command import LOG
from schemas.io import read_table
from schemas.tables import INPUT, KEPT, schema_for

# (stage, table, the column that is that stage's input) in commit order.
CHAIN = (("probe", "videos", "uri"), ("clips", "clips", "video_id"), ("objects", "objects", "clip_id"),
         ("pairs", "pairs", "clip_id"))


@dataclass
class ImportConfig:
    opens2v: OpenS2VConfig = field(default_factory=OpenS2VConfig)
    faces: bool = setting(True, help="find faces afterwards with stage 3 (pipelines/stage3_faces.py, this "
                                     "command's --models) inside the person boxes of each imported clip "
                                     "(opens2v.person_labels), then their cross pairs (pipelines/"
                                     "stage4b_cross_pairs.py); false: no faces")
    samples: bool = setting(True, help="assemble the samples table afterwards (pipelines/stage4c_samples.py)")


def models_args(models: str | dict[str, str]) -> list[str]:
    """``--models`` flags that give a chained stage the sources this command was given."""
    if isinstance(models, str):
        return ["--models", models]
    return [arg for role, source in models.items()
            for arg in ("--models", source if role == "*" else f"{role}={source}")]


def faces_sets(config: OpenS2VConfig) -> list[str]:
    """Stage 3's settings for imported clips: search the person boxes only."""
    return ["--set", "faces.regions=person_boxes", "--set", "faces.person_labels=" + ",".join(config.person_labels)]


def _flags(parser) -> None:
    parser.add_argument("--json", help="an OpenS2V-5M part JSON ({key: {metadata, word_tags, annotation}}); required")
    parser.add_argument("--videos", help="the part's video folder (metadata.path is relative to it); required")
    parser.add_argument("--backgrounds", help="folder of <key>.png backgrounds")
    parser.add_argument("--views", help="folder of per-key folders of generated views <idx>_<class>.png")
    parser.add_argument("--pairs", help="folder of cross-video pair lists (cross_frames_pairs.json, final_output/)")


def read_keys(path: str) -> pa.Table:
    """The part's keys in video order (``key``, ``path``, ``offset``, ``length``, ``parse_error``):
    one streaming scan (``curation/opens2v/scan.py``), so the driver never holds the file; each
    task reads its own keys' bytes."""
    if not os.path.isfile(path):
        raise UserError(f"--json {path}: no such file")
    try:
        spans = [(s.path, s.key, s.offset, s.length, s.error) for s in scan_part(path)]
    except LayoutError as err:
        raise UserError(str(err)) from None
    spans.sort(key=lambda s: (s[0], s[1]))
    columns = list(zip(*spans)) or [[]] * 5
    return pa.table({"key": pa.array(columns[1], pa.string()), "path": pa.array(columns[0], pa.string()),
                     "offset": pa.array(columns[2], pa.int64()), "length": pa.array(columns[3], pa.int64()),
                     "parse_error": pa.array(columns[4], pa.string())})


class ChainLedgers:
    """The chain stages' ledgers as they were when the job started, plus this job's claims.

    One scan of each ledger's ``input`` column per job (ids only; held as Python sets, a few
    tens of bytes per input, like ``StageJob.pending``'s view of the import's own ledger).
    A task *claims* the inputs it is about to commit: it may commit those no ledger held and
    no other block of this job claimed. The owner is the block's key hash, so a retried task
    gets its own claims back; after an actor restart the claims are rebuilt from the ledgers,
    which then hold whatever was committed. Runs as a Ray actor (``ray.remote(ChainLedgers)``).
    """

    def __init__(self, run_uri: str, stages: list[str]) -> None:
        run = RunDir.of(run_uri)
        self.done = {stage: set(run.read_ledger(stage).column("input").to_pylist()) for stage in stages}
        self.claims: dict[str, dict[str, str]] = {stage: {} for stage in stages}

    def claim(self, stage: str, inputs: list[str], owner: str) -> tuple[list[str], list[str]]:
        """(``inputs`` this owner may commit, those a ledger or another block already has)."""
        mine, taken = [], []
        for item in inputs:
            if item in self.done[stage] or self.claims[stage].setdefault(item, owner) != owner:
                taken.append(item)
            else:
                mine.append(item)
        return mine, taken


def import_block(batch: pa.Table, run_uri: str, folders: Folders, config: OpenS2VConfig, source: str,
                 ledgers: Any) -> pa.Table:
    """One block's keys (whole videos): their rows, committed table by table, then their ``imports``
    rows. A video's clips commit together, because ``clips`` counts a video as one input.
    ``ledgers``: the job's ``ChainLedgers`` actor."""
    import ray

    run = RunDir.of(run_uri)
    owner = block_hash(batch.column("key").to_pylist())
    imports, tables = import_keys(batch.to_pylist(), folders, config, source)

    def claim(stage: str, inputs: list[str]) -> tuple[list[str], list[str]]:
        return ray.get(ledgers.claim.remote(stage, inputs, owner))

    late = clips_of_finished_videos(run, tables["clips"], claim)
    if late:  # never dropped silently: the key becomes an error row saying why
        imports = [error_row(r[INPUT], LayoutError(
            f"{r['uri']}: key {r[INPUT]!r} adds clip {r['clip_id']} to a video an earlier import finished; "
            f"import every key of a video in one run")) if r.get("clip_id") in late else r for r in imports]
        tables = {name: [row for row in rows if row.get("clip_id") not in late] for name, rows in tables.items()}
    kept_clips = sorted({c["clip_id"] for c in tables["clips"] if c["status"] == KEPT})
    inputs = {"probe": sorted({v["uri"] for v in tables["videos"]}),
              "clips": sorted({c["video_id"] for c in tables["clips"]}),
              "objects": kept_clips, "pairs": kept_clips}
    for stage, table, column in CHAIN:
        mine = claim(stage, inputs[stage])[0] if inputs[stage] else []
        commit_new(run, stage, table, column, inputs[stage], tables[table], set(mine))
    return to_table(imports, schema_for("imports"))


def clips_of_finished_videos(run: RunDir, clips: list[dict],
                             claim: Callable[[str, list[str]], tuple[list[str], list[str]]]) -> set[str]:
    """Clips whose video the ``clips`` ledger (or another block of this job) already has but whose
    row is not in the table: ``clips`` counts a video as one input, so a clip can no longer join it."""
    videos = sorted({c["video_id"] for c in clips})
    done = set(claim("clips", videos)[1]) if videos else set()
    candidates = sorted({c["clip_id"] for c in clips if c["video_id"] in done})
    if not candidates or not run.has("clips"):
        return set(candidates)
    present = set(run.read("clips", ["clip_id"], [("clip_id", "in", candidates)]).column("clip_id").to_pylist())
    return set(candidates) - present


def whole_videos(todo: pa.Table, limit: int | None) -> pa.Table:
    """The first ``limit`` keys, extended to the end of the last one's video (keys are in video order)."""
    if limit is None or todo.num_rows <= limit:
        return todo
    paths = todo.column("path").to_pylist()
    end = limit
    while 0 < end < len(paths) and paths[end] == paths[end - 1]:
        end += 1
    return todo.slice(0, end)


def commit_new(run: RunDir, stage: str, table: str, column: str, inputs: list[str], rows: list[dict],
               mine: set[str]) -> None:
    """Commit ``rows`` of the inputs this block claimed (``mine``: no ledger holds them yet and no
    other block of the job claimed them), each input once."""
    done = set(inputs) - mine
    key = schema_for(table).metadata[b"magref.key"].decode()
    out, seen = [], set()
    for row in rows:
        if row[column] in done or row[key] in seen:
            continue
        seen.add(row[key])
        out.append({**row, INPUT: row[column], "status": row.get("status") or KEPT})
    have = {row[INPUT] for row in out}
    out += [empty_row(i) for i in inputs if i not in done and i not in have]
    if out:
        commit(to_table(out, schema_for(table)), run.root.uri(), stage, table)


def import_cross_pairs(run: RunDir, folder: str) -> int:
    """The pair lists as ``cross_pairs`` between imported clips' kept objects; returns rows written."""
    pairs = read_pair_lists(folder)
    keys = sorted({str(p[side]).rsplit("/", 1)[-1] for p in pairs for side in ("cur_id", "aft_id")})
    if not keys or not run.has("imports"):
        return 0
    imported = run.read("imports", ["key", "clip_id"], [("key", "in", keys), ("status", "==", KEPT)]).to_pylist()
    clip_of_key = {r["key"]: r["clip_id"] for r in imported}
    clips = sorted(set(clip_of_key.values()))
    objects: dict[str, list[dict]] = {}
    if clips and run.has("objects"):
        for row in run.read("objects", ["object_id", "clip_id", "label", "score", "status"],
                            [("clip_id", "in", clips)]).to_pylist():
            objects.setdefault(row["clip_id"], []).append(row)
    rows = cross_pair_rows(pairs, clip_of_key, objects)
    ids = [r["pair_id"] for r in rows]
    done = set(read_table(run.ledger(IMPORT_CROSS), "ledger", ["input"], [("input", "in", ids)])
               .column("input").to_pylist()) if ids else set()
    todo = [{**r, INPUT: r["pair_id"]} for r in rows if r["pair_id"] not in done]
    if todo:
        commit(to_table(todo, schema_for("cross_pairs")), run.root.uri(), IMPORT_CROSS, "cross_pairs")
    return len(todo)


def main(argv: list[str] | None = None) -> int:
    job = StageJob(IMPORT_OPENS2V, ImportConfig, __doc__, argv, add_arguments=_flags)
    args = job.args
    for flag in ("json", "videos"):
        if not getattr(args, flag):
            raise UserError(f"--{flag} is required (see --help)")
    for flag in ("videos", "backgrounds", "views", "pairs"):
        if getattr(args, flag) and not os.path.isdir(getattr(args, flag)):
            raise UserError(f"--{flag} {getattr(args, flag)}: no such folder")
    folders = Folders(os.path.abspath(args.videos), args.backgrounds and os.path.abspath(args.backgrounds),
                      args.views and os.path.abspath(args.views))
    cfg = job.config.opens2v
    if job.config.faces:  # a missing InsightFace is one line now, not an error row per clip after the import
        note = check_weights(FacesConfig(), job.models)
        if note:
            LOG.info(f"[opens2v] faces: {note} (--set faces=false imports without faces)")
    with job:
        for stage, table, _ in CHAIN:  # parts a killed import committed no ledger for
            clean_orphans(job.run, stage, table)
        clean_orphans(job.run, IMPORT_CROSS, "cross_pairs")
        limit, job.args.limit = job.args.limit, None  # --limit counts keys but never splits a video
        todo = whole_videos(job.pending(read_keys(args.json)), limit)
        job.report.selected = todo.num_rows
        if todo.num_rows:
            ds = job.dataset(todo, rows_per_block=cfg.pool.batch_size, together="path")
            import ray

            ledgers = ray.remote(ChainLedgers).options(num_cpus=0, max_restarts=-1, max_task_retries=-1).remote(
                job.run.root.uri(), [stage for stage, _, _ in CHAIN])
            ds = ds.map_batches(import_block, fn_kwargs={
                "run_uri": job.run.root.uri(), "folders": folders, "config": cfg, "source": os.path.abspath(args.json),
                "ledgers": ledgers}, batch_size=None, batch_format="pyarrow",
                num_cpus=cfg.pool.num_cpus)  # whole blocks: whole videos
            job.write(ds)
        if args.pairs:
            print(f"[opens2v] cross pairs: {import_cross_pairs(job.run, args.pairs)} new", flush=True)
        if not job.report.accounted:
            return 1
        run = ["--run-dir", job.run.root.uri(), "--gpus", args.gpus, "--progress", args.progress,
               "--part-inputs", str(args.part_inputs), "--part-mb", str(args.part_mb),
               *(["--verbose"] if args.verbose else [])]
        if job.config.faces:  # stage 3 in the person boxes, then identities' cross pairs, on the Ray this job started
            code = stage3_faces.main([*run, *models_args(job.models), *faces_sets(cfg)]) or stage4b_cross_pairs.main(run)
            if code:
                return code
        if job.config.samples:  # the one assembly, on the Ray this job started
            return stage4c_samples.main(run)
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))

"""What every stage job shares: the stage declarations, CLI, Ray, operator wiring, the job.

A stage job (``pipelines/stageN_*.py``) reads top to bottom as its data flow::

    job = StageJob(STAGE["clips"], Stage1Config, __doc__, argv)
    with job:                                   # lock, clean orphans; report at the end
        todo = job.pending(job.read_input())    # declared input, minus the ledger (resume)
        ds = job.dataset(todo, rows_per_block=...)
        ds = map_operator(ds, SomeOperator, cfg.step.pool, config=cfg.step, models=job.models)
        job.write(ds)                           # atomic parts + ledger (pipelines/ledger.py)

Rules the wiring keeps (see ``pipelines/ledger.py`` for the commit and the block invariant):

* **Declared inputs.** A ``Stage`` names its input table, id column, row filter and the
  columns the driver reads; reads push both down into Parquet, so image and embedding
  columns never reach the driver. ``pending``, ``run_all`` and ``inspect_run`` all use
  the declaration, so a run's books agree on what a stage's inputs are.
* **Pools.** A step's config owns its pool (``curation.operator``): a ``TaskPool`` step
  runs as Ray tasks, an ``ActorPool`` step on actors that load the model once.
* **Frames before models.** A GPU step's frames are decoded by a ``FrameReader`` task
  step in front of it. Ray fuses a task step into the next actor step only when their
  remote args are equal, i.e. on CPU-only runs (where fusing saves a copy); once the
  model step asks for GPUs the decode step stays a separate operator on CPU slots.
* **Whole inputs.** An operator with ``whole_inputs = True`` is handed every row of each
  input in one call: rows are grouped to one row per input (list columns) in front of it
  and flattened back inside its worker, so ``batch_size`` counts inputs. This relies on
  the block invariant (all rows of an input in one block), which ``dataset`` sets up.
* **User mistakes** raise ``UserError`` (or a ``ConfigError``, ``ModelSourceError``,
  ``LockHeld``, a missing input path); ``cli`` prints them as one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from curation.envelope import group_inputs, put_column, ungroup_inputs
from curation.models import ROLES, ModelSourceError, resolve
from curation.operator import ActorPool, TaskPool
from pipelines.config import ConfigError, key_help, load_config, to_dict, to_yaml
from pipelines.ledger import RunDir, clean_orphans, commit, totals
from pipelines.report import Report, versions
from pipelines.run_lock import LockHeld, StageLock
from schemas.io import Filter, read_manifest
from schemas.tables import INPUT
from schemas.validate import SchemaError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KEPT_ONLY: Filter = [("status", "==", "kept")]
CLIP_COLUMNS = ("clip_id", "video_id", "uri", "start_frame", "end_frame", "start_s", "end_s", "fps",
                "width", "height", "caption", "subjects")


@dataclass(frozen=True)
class Stage:
    """A stage's place in the chain and what it reads, as data every tool shares."""

    name: str
    table: str  # the table it writes
    script: str  # pipelines/<script>.py
    input_table: str | None  # None: stage 0 reads raw files
    input_id: str  # the column that identifies one input (its ledger key)
    input_filter: tuple[tuple[str, str, Any], ...] = ()  # rows of the input table that are inputs
    input_columns: tuple[str, ...] = ()  # what the driver reads of them (empty: all)
    roles: tuple[str, ...] = ()  # model roles the stage loads (checked before Ray starts)

    @property
    def filter(self) -> Filter | None:
        return [tuple(f) for f in self.input_filter] or None

    def read_inputs(self, run: RunDir, columns: list[str] | None = None) -> pa.Table:
        """The stage's inputs in ``run`` (declared filter; declared or given columns)."""
        if not run.has(self.input_table):
            raise UserError(f"{run.root.uri()} has no {self.input_table} table: run "
                            f"{_producer_hint(self.input_table, run)} first")
        return run.read(self.input_table, columns or list(self.input_columns) or None, self.filter)


# The chain in order. run_all and inspect_run walk it; a stage whose script does not
# exist yet is skipped by run_all. Stages 2-4 read kept clips only.
STAGES = (
    Stage("probe", "videos", "stage0_probe", None, "uri"),
    Stage("clips", "clips", "stage1_clips", "videos", "video_id",
          input_columns=("uri", "video_id", "num_frames", "width", "height"), roles=("aesthetic", "captioner")),
    Stage("objects", "objects", "stage2_objects", "clips", "clip_id", tuple(KEPT_ONLY), CLIP_COLUMNS,
          roles=("grounding", "segmenter", "captioner")),
    Stage("faces", "faces", "stage3_faces", "clips", "clip_id", tuple(KEPT_ONLY), CLIP_COLUMNS,
          roles=("face_analysis", "face_dlib")),
    Stage("pairs", "samples", "stage4_pairs", "clips", "clip_id", tuple(KEPT_ONLY), CLIP_COLUMNS),
)
STAGE = {stage.name: stage for stage in STAGES}


def _producer_hint(table: str, run: RunDir) -> str:
    for stage in STAGES:
        if stage.table == table:
            extra = " --input VIDEOS" if stage.input_table is None else ""
            return f"pipelines/{stage.script}.py --run-dir {run.root.uri()}{extra}"
    return f"the stage that writes {table}"


# --------------------------------------------------------------------------- CLI


class UserError(Exception):
    """A mistake the user can fix (missing table, wrong path, bad key): one line, exit 2."""


USER_ERRORS = (UserError, ConfigError, ModelSourceError, LockHeld, FileNotFoundError, SchemaError)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (usage stays in --help)."""

    def error(self, message: str):  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a job's ``main`` as a command: user mistakes become one stderr line and exit 2.

    Anything else (a bug) keeps its traceback.
    """
    try:
        return main(argv)
    except USER_ERRORS as err:
        prog = os.path.basename(sys.argv[0]) or "magref"
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


def config_epilog(config_cls: type) -> str:
    rows = key_help(config_cls)
    width = max((len(key) for key, _, _ in rows), default=0)
    lines = ["config keys (--set KEY=VALUE, or nested in a --config YAML; --print-config shows them all):"]
    for key, default, meaning in rows:
        shown = repr(default) if isinstance(default, str) and len(default) < 40 else (
            "<long text>" if isinstance(default, str) else json.dumps(default, default=str))
        lines.append(f"  {key:<{width}}  {shown:<12}  {meaning}")
    return "\n".join(lines)


def parse_args(stage: str, config_cls: type, description: str | None,
               argv: list[str] | None = None, input_help: str | None = None) -> tuple[argparse.Namespace, Any]:
    parser = Parser(prog=stage, description=description, epilog=config_epilog(config_cls),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", help="run directory (local path or pyarrow filesystem URI); required")
    parser.add_argument("--input", help=input_help or "input table (default: the previous stage's table in RUN)")
    parser.add_argument("--config", help="YAML file with config keys (see --set)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set caption.pool.actors=4 (repeatable)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML (which --config reads back) and exit")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address or 'auto'; default: RAY_ADDRESS if set, else an embedded Ray")
    parser.add_argument("--models", action="append", default=[], metavar="SOURCE|ROLE=SOURCE",
                        help="'tiny' (offline random models), 'default' (hub ids), or ROLE=id/dir (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="process at most this many new inputs")
    args = parser.parse_args(argv)
    try:
        if args.config and not os.path.isfile(args.config):
            raise ConfigError(f"--config {args.config}: no such file")
        config = load_config(config_cls, args.config, args.set)
        args.models = parse_models(args.models)
    except (ConfigError, ModelSourceError, OSError) as err:
        parser.error(str(err))
    if args.print_config:
        print(to_yaml(config), end="")
        raise SystemExit(0)
    if not args.run_dir:
        parser.error("the following arguments are required: --run-dir")
    if args.limit is not None and args.limit < 0:
        parser.error(f"--limit must be >= 0, got {args.limit}")
    return args, config


def parse_models(values: list[str]) -> str | dict[str, str]:
    """``--models tiny`` -> "tiny"; ``--models captioner=dir --models tiny`` -> {role: source, "*": ...}.

    A role the registry does not know is an error naming the known ones.
    """
    roles: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            role, sep, source = item.partition("=")
            if sep:
                role = role.strip()
                if role not in ROLES:
                    raise ModelSourceError(f"--models {item}: unknown model role {role!r}; "
                                           f"known roles: {', '.join(sorted(ROLES))}")
                roles[role] = source.strip()
            elif item.strip():
                roles["*"] = item.strip()
    if not roles:
        return "default"
    if list(roles) == ["*"]:
        return roles["*"]
    return roles


# --------------------------------------------------------------------------- Ray


def init_ray(address: str | None) -> bool:
    """Connect to a cluster or start an embedded Ray. Returns whether we started it.

    ``ray.init(address="local")`` never attaches to a stale cluster a killed job left
    in /tmp/ray; RAY_ADDRESS (set by ``ray job submit``) and ``--address`` connect.
    """
    import ray

    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        ray.init(address=target, log_to_driver=True)
        return True
    # Embedded: workers must import our packages even when magref is not installed.
    paths = [ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    ray.init(address="local", include_dashboard=False, log_to_driver=True)
    return True


def has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def map_operator(ds, operator_cls: type, pool: TaskPool | ActorPool, **init_kwargs: Any):
    """``ds.map_batches`` for a ``curation`` operator, sized by its step's pool.

    ``init_kwargs`` go to the operator's constructor (once per actor, or per task batch for
    a ``TaskPool`` step, whose operators load nothing worth keeping). GPUs are requested
    only when the cluster has some, so one config runs anywhere. An operator that sets
    ``whole_inputs = True`` gets every row of each input in one call (module docstring).
    """
    whole = getattr(operator_cls, "whole_inputs", False)
    if whole:
        ds = ds.map_batches(group_inputs, batch_size=None, batch_format="pyarrow", num_cpus=0.1)
    kwargs: dict[str, Any] = {"batch_size": pool.batch_size, "batch_format": "pyarrow", "num_cpus": pool.num_cpus}
    if isinstance(pool, TaskPool):
        return ds.map_batches(_task(operator_cls, whole), fn_kwargs={"init_kwargs": init_kwargs}, **kwargs)
    from ray.data import ActorPoolStrategy

    if pool.num_gpus and has_gpus():
        kwargs["num_gpus"] = pool.num_gpus
    return ds.map_batches(_actor(operator_cls, whole), fn_constructor_kwargs=init_kwargs,
                          compute=ActorPoolStrategy(min_size=1, max_size=pool.actors), **kwargs)


def _task(operator_cls: type, whole: bool):
    """A task function that builds the operator per batch, named after it for Ray's progress bars."""

    def run(batch: pa.Table, init_kwargs: dict[str, Any]) -> pa.Table:
        return operator_cls(**init_kwargs)(ungroup_inputs(batch) if whole else batch)

    run.__name__ = run.__qualname__ = operator_cls.__name__
    return run


def _actor(operator_cls: type, whole: bool) -> type:
    """The operator class itself, or (whole inputs) a wrapper that flattens grouped rows first."""
    if not whole:
        return operator_cls

    class WholeInputs:
        def __init__(self, **init_kwargs: Any):
            self.operator = operator_cls(**init_kwargs)

        def __call__(self, batch: pa.Table) -> pa.Table:
            return self.operator(ungroup_inputs(batch))

    WholeInputs.__name__ = WholeInputs.__qualname__ = operator_cls.__name__
    return WholeInputs


# --------------------------------------------------------------------------- the job


class StageJob:
    """One stage run: ``with StageJob(...) as job:`` brackets the lock, Ray, resume and the report."""

    def __init__(self, stage: Stage, config_cls: type, description: str | None,
                 argv: list[str] | None = None, input_help: str | None = None):
        self.stage = stage
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.args, self.config = parse_args(stage.name, config_cls, description, self.argv, input_help)
        self.run = RunDir.of(self.args.run_dir)
        self.report = Report(stage.name)
        self.lock = StageLock(self.run.root, stage.name)
        self._owns_ray = False
        for role in stage.roles:  # a wrong model source fails here, not inside a Ray actor
            resolve(role, self.models)

    @property
    def table(self) -> str:
        return self.stage.table

    def __enter__(self) -> "StageJob":
        self._started = time.perf_counter()
        note = self.lock.acquire()
        if note:
            print(note, flush=True)
        try:
            removed = clean_orphans(self.run, self.stage.name, self.table)
        except BaseException:
            self.lock.release()
            raise
        if removed:
            print(f"[{self.stage.name}] removed {removed} uncommitted part(s) left by an interrupted run", flush=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.report.seconds = time.perf_counter() - self._started
                self._write_run_json()
                print(self.report.text(self.table), flush=True)
        finally:
            self.lock.release()
            if self._owns_ray:
                import ray

                ray.shutdown()

    @property
    def models(self) -> str | dict[str, str]:
        return self.args.models

    def read_input(self, columns: list[str] | None = None) -> pa.Table:
        """The stage's inputs: ``--input`` when given, else its declared table in RUN, with
        the declared filter and columns pushed down into the Parquet reader."""
        stage = self.stage
        if not self.args.input:
            return stage.read_inputs(self.run, columns)
        return read_manifest(self.args.input, stage.input_table, columns or list(stage.input_columns) or None,
                             stage.filter)

    def pending(self, inputs: pa.Table) -> pa.Table:
        """Inputs whose id the stage's ledger does not hold yet (first of each id), up to --limit,
        with the envelope's ``_input`` column set to that id."""
        id_column = self.stage.input_id
        ids = pc.cast(inputs.column(id_column), pa.string())
        inputs = inputs.set_column(inputs.column_names.index(id_column), id_column, ids)
        inputs = inputs.take(_first_index(ids.to_pylist()))
        done = pa.array(sorted(set(self.run.read_ledger(self.stage.name).column("input").to_pylist())), pa.string())
        is_done = pc.is_in(inputs.column(id_column), value_set=done)
        todo = inputs.filter(pc.invert(is_done))
        if self.args.limit is not None:
            todo = todo.slice(0, self.args.limit)
        self.report.inputs_total = inputs.num_rows
        self.report.skipped = pc.sum(is_done).as_py() or 0
        self.report.selected = todo.num_rows
        # Every row carries its input's id from the start (the envelope's column), so the
        # first operator can already settle an input or hand it to a whole-input step.
        return put_column(todo, INPUT, todo.column(id_column).combine_chunks())

    def dataset(self, table: pa.Table, rows_per_block: int):
        """A Ray dataset of ``table`` cut into blocks, so a pool can share the work.

        Ray never re-cuts a block afterwards (``target_max_block_size=None``): that keeps
        all rows of an input together, which commits and whole-input operators rely on.
        """
        import ray.data

        self._owns_ray = init_ray(self.args.address) or self._owns_ray
        step = max(1, rows_per_block)
        ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])
        ds.context.target_max_block_size = None
        return ds

    def write(self, ds) -> None:
        """Commit every block (outputs, errors, ledger) and tally the report."""
        committed = ds.map_batches(commit, fn_kwargs={"run_uri": self.run.root.uri(), "stage": self.stage.name,
                                                      "table": self.table},
                                   batch_size=None, batch_format="pyarrow", num_cpus=0.25)
        for batch in committed.iter_batches(batch_size=None, batch_format="pyarrow"):
            for summary in batch.to_pylist():
                self.report.add(summary)

    def _write_run_json(self) -> None:
        path = self.run.root.join("run.json")
        fs = self.run.root.fs
        state: dict[str, Any] = {"stages": {}}
        if path.exists():
            with fs.open_input_stream(path.path) as stream:
                state = json.loads(stream.read().decode() or "{}") or {"stages": {}}
        last = {**self.report.as_dict(), "finished": datetime.now(timezone.utc).isoformat(),
                "argv": self.argv, "input": self.args.input, "models": self.models}
        entry = state.setdefault("stages", {}).setdefault(self.stage.name, {})
        entry.update({"table": self.table, "config": to_dict(self.config), "versions": versions(),
                      "last_run": last, "totals": totals(self.run.read_ledger(self.stage.name))})
        entry["history"] = (entry.get("history", []) + [last])[-20:]
        fs.create_dir(self.run.root.path, recursive=True)
        tmp = self.run.root.join(f".run.json.{os.getpid()}.tmp")
        with fs.open_output_stream(tmp.path) as stream:
            stream.write(json.dumps(state, indent=2, default=str).encode())
        fs.move(tmp.path, path.path)


def _first_index(values: list[Any]) -> list[int]:
    seen: dict[Any, int] = {}
    for i, value in enumerate(values):
        seen.setdefault(value, i)
    return sorted(seen.values())

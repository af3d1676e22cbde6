"""What every stage job shares: CLI, config, Ray start/connect, operator wiring, the job.

The job brackets a stage run: it reads inputs, keeps those the stage's ledger does not
list (resume), maps them through ``curation`` operators on Ray Data, commits whole
blocks with ``pipelines.ledger.commit`` (atomic parts + ledger: see that module) and
ends with the report (``pipelines.report``) printed and written into ``run.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import ConfigError, flat_keys, load_config, to_dict
from pipelines.ledger import RunDir, clean_orphans, commit, totals
from pipelines.report import Report, versions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Stage:
    """A stage's place in the chain: its name, its table, and what it reads."""

    name: str
    table: str
    script: str
    input_table: str | None  # None: stage 0 reads raw files
    input_id: str


# The chain in order. run_all and inspect_run walk it; a stage whose script does not
# exist yet is skipped by run_all.
STAGES = (
    Stage("probe", "videos", "stage0_probe", None, "uri"),
    Stage("clips", "clips", "stage1_clips", "videos", "video_id"),
    Stage("objects", "objects", "stage2_objects", "clips", "clip_id"),
    Stage("faces", "faces", "stage3_faces", "clips", "clip_id"),
    Stage("pairs", "samples", "stage4_pairs", "clips", "clip_id"),
)


@dataclass
class PoolConfig:
    """How many actors run an operator and what each asks for (None: the operator's own)."""

    actors: int = 2
    num_cpus: float | None = None
    num_gpus: float | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ValueError(f"actors must be >= 1, got {self.actors}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


# --------------------------------------------------------------------------- CLI


def parse_args(stage: str, config_cls: type, description: str | None,
               argv: list[str] | None = None, input_help: str | None = None) -> tuple[argparse.Namespace, Any]:
    keys = ", ".join(flat_keys(config_cls))
    parser = argparse.ArgumentParser(prog=f"{stage}", description=description,
                                     epilog=f"config keys (--set KEY=VALUE or in --config YAML): {keys}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="run directory (local path or pyarrow filesystem URI)")
    parser.add_argument("--input", help=input_help or "input table (default: the previous stage's table in RUN)")
    parser.add_argument("--config", help="YAML file with config keys (see --set)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set pool.actors=4 (repeatable)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address or 'auto'; default: RAY_ADDRESS if set, else an embedded Ray")
    parser.add_argument("--models", action="append", default=[], metavar="SOURCE|ROLE=SOURCE",
                        help="'tiny' (offline random models), 'default' (hub ids), or ROLE=id/dir (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="process at most this many new inputs")
    args = parser.parse_args(argv)
    try:
        config = load_config(config_cls, args.config, args.set)
        args.models = parse_models(args.models)
    except (ConfigError, FileNotFoundError) as err:
        parser.error(str(err))
    return args, config


def parse_models(values: list[str]) -> str | dict[str, str]:
    """``--models tiny`` -> "tiny"; ``--models captioner=dir --models tiny`` -> {role: source, "*": ...}."""
    roles: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            role, sep, source = item.partition("=")
            if sep:
                roles[role.strip()] = source.strip()
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


def batch_size_of(operator_cls: type, pool: PoolConfig) -> int:
    return pool.batch_size or operator_cls.resources.batch_size


def map_operator(ds, operator_cls: type, pool: PoolConfig, *, batch_size: int | None = -1, **init_kwargs: Any):
    """``ds.map_batches`` for a ``curation`` operator, sized from its declared resources.

    ``init_kwargs`` go to the operator's constructor. Operators that hold a model run on
    an actor pool (loaded once per actor, up to ``pool.actors`` actors); stateless ones
    run as plain tasks, which start in milliseconds instead of seconds. GPUs are
    requested only when the cluster has some, so one config runs anywhere.
    ``batch_size=None`` passes whole blocks (not allowed by Ray together with GPUs).
    """
    declared = operator_cls.resources
    kwargs: dict[str, Any] = {
        "batch_size": batch_size_of(operator_cls, pool) if batch_size == -1 else batch_size,
        "batch_format": "pyarrow",
        "num_cpus": pool.num_cpus if pool.num_cpus is not None else declared.num_cpus,
    }
    num_gpus = pool.num_gpus if pool.num_gpus is not None else declared.num_gpus
    if num_gpus and has_gpus():
        kwargs["num_gpus"] = num_gpus
    if declared.stateless and not kwargs.get("num_gpus"):
        return ds.map_batches(_stateless(operator_cls), fn_kwargs={"init_kwargs": init_kwargs}, **kwargs)
    from ray.data import ActorPoolStrategy

    return ds.map_batches(operator_cls, fn_constructor_kwargs=init_kwargs,
                          compute=ActorPoolStrategy(min_size=1, max_size=pool.actors), **kwargs)


def _stateless(operator_cls: type):
    """A task function that builds the operator per batch, named after it for Ray's progress bars."""

    def run(batch: pa.Table, init_kwargs: dict[str, Any]) -> pa.Table:
        return operator_cls(**init_kwargs)(batch)

    run.__name__ = run.__qualname__ = operator_cls.__name__
    return run


class StageJob:
    """One stage run: ``with StageJob(...) as job:`` brackets Ray, resume and the report.

    The job script reads its inputs, calls ``job.pending`` to keep the new ones,
    builds a Ray dataset with ``job.dataset`` and ends with ``job.write``.
    """

    def __init__(self, stage: str, table: str, config_cls: type, description: str | None,
                 argv: list[str] | None = None, input_help: str | None = None):
        self.stage, self.table = stage, table
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.args, self.config = parse_args(stage, config_cls, description, self.argv, input_help)
        self.run = RunDir.of(self.args.run_dir)
        self.report = Report(stage)
        self._owns_ray = False

    def __enter__(self) -> "StageJob":
        self._started = time.perf_counter()
        removed = clean_orphans(self.run, self.stage, self.table)
        if removed:
            print(f"[{self.stage}] removed {removed} uncommitted part(s) left by an interrupted run", flush=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.report.seconds = time.perf_counter() - self._started
                self._write_run_json()
                print(self.report.text(self.table), flush=True)
        finally:
            if self._owns_ray:
                import ray

                ray.shutdown()

    @property
    def models(self) -> str | dict[str, str]:
        return self.args.models

    def read_input(self, kind: str) -> pa.Table:
        """The previous stage's table: ``--input`` when given, else RUN/<kind>."""
        from schemas.io import read_manifest

        return read_manifest(self.args.input, kind) if self.args.input else self.run.read(kind)

    def pending(self, inputs: pa.Table, id_column: str) -> pa.Table:
        """Inputs whose id the stage's ledger does not hold yet (first of each id), up to --limit."""
        ids = pc.cast(inputs.column(id_column), pa.string())
        inputs = inputs.set_column(inputs.column_names.index(id_column), id_column, ids)
        inputs = inputs.take(_first_index(ids.to_pylist()))
        done = pa.array(sorted(set(self.run.read_ledger(self.stage).column("input").to_pylist())), pa.string())
        is_done = pc.is_in(inputs.column(id_column), value_set=done)
        todo = inputs.filter(pc.invert(is_done))
        if self.args.limit is not None:
            todo = todo.slice(0, self.args.limit)
        self.report.inputs_total = inputs.num_rows
        self.report.skipped = pc.sum(is_done).as_py() or 0
        self.report.selected = todo.num_rows
        return todo

    def dataset(self, table: pa.Table, rows_per_block: int):
        """A Ray dataset of ``table`` cut into blocks, so an actor pool can share the work."""
        import ray.data

        self._owns_ray = init_ray(self.args.address) or self._owns_ray
        step = max(1, rows_per_block)
        ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])
        ds.context.target_max_block_size = None  # never re-cut a block: see the module docstring
        return ds

    def write(self, ds) -> None:
        """Commit every block (outputs, errors, ledger) and tally the report."""
        committed = ds.map_batches(commit, fn_kwargs={"run_uri": self.run.root.uri(), "stage": self.stage,
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
        entry = state.setdefault("stages", {}).setdefault(self.stage, {})
        entry.update({"table": self.table, "config": to_dict(self.config), "versions": versions(),
                      "last_run": last, "totals": totals(self.run.read_ledger(self.stage))})
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



"""One stage run as a context: the lock, Ray, resume, commits and the report.

A stage job (``pipelines/stageN_*.py``) reads top to bottom as its data flow::

    job = StageJob(STAGE["clips"], Stage1Config, __doc__, argv)
    with job:                                   # lock, clean orphans; report at the end
        todo = job.pending(job.read_input())    # declared input, minus the ledger (resume)
        ds = job.dataset(todo, rows_per_block=...)
        ds = map_operator(ds, SomeOperator, cfg.step.pool, config=cfg.step, models=job.models)
        job.write(ds)                           # atomic parts + ledger (pipelines/ledger.py)

The stage declarations are ``pipelines/stages.py``, the command line ``pipelines/cli.py``,
the Ray wiring ``pipelines/wiring.py``; see ``pipelines/ledger.py`` for the commit and the
block invariant.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from curation.envelope import put_column
from curation.models import resolve
from pipelines.cli import parse_args
from pipelines.config import to_dict
from pipelines.ledger import RunDir, clean_orphans, commit_grouped, pack_block, totals
from pipelines.progress import Progress
from pipelines.report import Report, versions
from pipelines.run_lock import StageLock, update_run_record
from pipelines.stages import Stage
from pipelines.wiring import GPU_STEPS, USE_GPUS, init_ray, use_gpus
from schemas.command import LOG, configure_logging
from schemas.io import read_manifest
from schemas.tables import INPUT

# A job whose GPU steps find no GPU after this long says so (once): an autoscaler that
# cannot start the node type, or --gpus on where no GPU exists, would otherwise wait silently.
GPU_WAIT_S = float(os.environ.get("MAGREF_GPU_WAIT_S", "600"))


class StageJob:
    """One stage run: ``with StageJob(...) as job:`` brackets the lock, Ray, resume and the report."""

    def __init__(self, stage: Stage, config_cls: type, description: str | None,
                 argv: list[str] | None = None, input_help: str | None = None,
                 add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                 models_flag: str = "--models"):
        self.stage = stage
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.args, self.config = parse_args(stage.name, config_cls, description, self.argv, input_help,
                                            add_arguments, models_flag)
        self.run = RunDir.of(self.args.run_dir)
        self.report = Report(stage.name)
        self.lock = StageLock(self.run.root, stage.name)
        self._owns_ray = False
        self._gpus: bool | None = None
        configure_logging(self.args.verbose)
        for role in stage.roles:  # a wrong model source fails here, not inside a Ray actor
            resolve(role, self.models)

    @property
    def table(self) -> str:
        return self.stage.table

    def __enter__(self) -> "StageJob":
        self._started = time.perf_counter()
        note = self.lock.acquire()
        if note:
            LOG.info(note)
        try:
            removed = clean_orphans(self.run, self.stage.name, self.table)
        except BaseException:
            self.lock.release()
            raise
        if removed:
            LOG.info(f"[{self.stage.name}] removed {removed} uncommitted part(s) left by an interrupted run")
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
    def gpus(self) -> bool:
        """Whether this job's model steps ask for their declared GPUs (``--gpus``, decided once)."""
        if self._gpus is None:
            self._owns_ray = init_ray(self.args.address, self.args.verbose) or self._owns_ray
            self._gpus = use_gpus(self.args.gpus)
        return self._gpus

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
        inputs = inputs.take(pa.array(_first_index(ids.to_pylist()), pa.int64()))  # typed: [] would be null
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

    def dataset(self, table: pa.Table, rows_per_block: int, together: str | None = None):
        """A Ray dataset of ``table`` cut into blocks, so a pool can share the work.

        Ray never re-cuts a block afterwards (``target_max_block_size=None``): that keeps
        all rows of an input together, which commits and whole-input operators rely on.
        ``together`` names a column whose equal values (on adjacent rows) never span two blocks.
        """
        import ray.data

        gpus = self.gpus  # starts or joins Ray, then the one GPU decision
        ds = ray.data.from_arrow(_blocks(table, max(1, rows_per_block), together))
        ds.context.target_max_block_size = None
        ds.context.set_config(USE_GPUS, gpus)
        ds.context.set_config(GPU_STEPS, [])
        return ds

    def write(self, ds) -> None:
        """Commit the outputs (parts, errors, ledger) every ``--part-inputs`` inputs or ``--part-mb``
        MB, tally the report, advance the progress display.

        Blocks are first folded to one row per input (``pack_block``, on whole blocks), so Ray may
        bundle and cut them into batches of exactly ``--part-inputs`` whole inputs for the commit.
        """
        packed = ds.map_batches(pack_block, fn_kwargs={"table": self.table}, batch_size=None,
                                batch_format="pyarrow", num_cpus=0.25)
        committed = packed.map_batches(
            commit_grouped, fn_kwargs={"run_uri": self.run.root.uri(), "stage": self.stage.name, "table": self.table,
                                       "part_inputs": self.args.part_inputs, "part_mb": self.args.part_mb},
            batch_size=self.args.part_inputs, batch_format="pyarrow", num_cpus=0.25)
        label = f"[{self.args.step_of}] {self.stage.name}" if self.args.step_of else self.stage.name
        progress = Progress(label, self.report.selected, self.args.progress)
        watchdog = threading.Timer(GPU_WAIT_S, _warn_no_gpu, (self.stage.name, ds.context.get_config(GPU_STEPS, [])))
        watchdog.daemon = True
        watchdog.start()
        try:
            for batch in committed.iter_batches(batch_size=None, batch_format="pyarrow"):
                for summary in batch.to_pylist():
                    self.report.add(summary)
                    progress.update(summary["inputs"])
        finally:
            watchdog.cancel()
            progress.close()

    def _write_run_json(self) -> None:
        """This stage's entry of ``run.json``, written under the run-level lock (stages run at once)."""
        last = {**self.report.as_dict(), "finished": datetime.now(timezone.utc).isoformat(),
                "argv": self.argv, "input": self.args.input, "models": self.models}
        record = {"table": self.table, "config": to_dict(self.config), "versions": versions(),
                  "last_run": last, "totals": totals(self.run.read_ledger(self.stage.name))}

        def change(state: dict[str, Any]) -> None:
            entry = state.setdefault("stages", {}).setdefault(self.stage.name, {})
            entry.update(record)
            entry["history"] = (entry.get("history", []) + [last])[-20:]

        update_run_record(self.run.root, change)


def _warn_no_gpu(stage: str, steps: list[str]) -> None:
    """One line when the job's GPU steps have waited ``GPU_WAIT_S`` and the cluster still has no GPU."""
    import ray

    if steps and ray.is_initialized() and not ray.cluster_resources().get("GPU", 0):
        LOG.warning(f"[{stage}] waited {GPU_WAIT_S:.0f} s for a GPU for step(s) {', '.join(steps)}: none is up "
                    "(can the autoscaler start a GPU node type? --gpus off runs them on CPU)")


def _first_index(values: list[Any]) -> list[int]:
    seen: dict[Any, int] = {}
    for i, value in enumerate(values):
        seen.setdefault(value, i)
    return sorted(seen.values())


def _blocks(table: pa.Table, step: int, together: str | None) -> list[pa.Table]:
    """``table`` in slices of about ``step`` rows; a run of equal ``together`` values stays in one."""
    if together is None:
        return [table.slice(i, step) for i in range(0, table.num_rows, step)]
    values = table.column(together).to_pylist()
    blocks, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or (i - start >= step and values[i] != values[i - 1]):
            blocks.append(table.slice(start, i - start))
            start = i
    return blocks

"""Check a run directory's books: every input in exactly one place, every part readable.

    python -m pipelines.inspect_run RUN [--json]

For each stage that has run: its inputs as the stage declares them (``pipelines/common.py``
``STAGES``: e.g. stages 2-4 take kept clips only; stage 0 the uris it was pointed at), the ledger rows, the output rows by status and the error
rows, and whether they add up: inputs = finished + not yet run; finished inputs =
inputs with rows + errors + empty; ledger rows = table rows; no key twice. Exits 1
when something does not add up, so it can gate a pipeline.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script

from pipelines.common import STAGES, Parser, UserError, cli  # noqa: E402
from pipelines.ledger import RunDir  # noqa: E402
from schemas.tables import key_of  # noqa: E402
from schemas.validate import SchemaError  # noqa: E402


def inspect(run: RunDir) -> dict:
    """The books of every stage found in ``run`` (see the module docstring)."""
    found: dict[str, dict] = {}
    problems: list[str] = []
    for stage in STAGES:
        try:
            ledger = run.read_ledger(stage.name)
        except SchemaError as err:
            problems.append(str(err))
            continue
        if not ledger.num_rows:
            continue
        entry: dict = {"table": stage.table}
        try:  # ids and statuses only: image and embedding columns are never read here
            table = run.read(stage.table, [key_of(stage.table)])
            errors = run.read("errors", ["stage", "input"])
        except SchemaError as err:
            problems.append(str(err))
            continue
        keys = table.column(key_of(stage.table)).to_pylist()
        duplicates = [k for k, n in collections.Counter(keys).items() if n > 1]
        ledger_rows = ledger.to_pylist()
        finished = {row["input"] for row in ledger_rows}
        errored = {row["input"] for row in ledger_rows if row["error_type"]}
        stage_errors = {row["input"] for row in errors.to_pylist() if row["stage"] == stage.name}
        statuses: collections.Counter = collections.Counter()
        for row in ledger_rows:
            statuses.update(json.loads(row["statuses"]))
        inputs = _inputs_of(run, stage)
        entry.update({
            "inputs": len(inputs) if inputs is not None else None,
            "finished": len(finished),
            "not_yet_run": len(inputs - finished) if inputs is not None else None,
            "rows": len(keys), "by_status": dict(statuses), "errors": len(stage_errors),
            "empty": sum(1 for row in ledger_rows if not row["rows"] and not row["error_type"]),
        })
        if duplicates:
            problems.append(f"{stage.table}: {len(duplicates)} key(s) appear twice, e.g. {duplicates[0]}")
        if sum(statuses.values()) != len(keys):
            problems.append(f"{stage.table}: ledger counts {sum(statuses.values())} rows, table holds {len(keys)}")
        if errored != stage_errors:
            problems.append(f"errors of stage {stage.name}: ledger names {len(errored)}, table holds {len(stage_errors)}")
        if len(ledger_rows) != len(finished):
            problems.append(f"ledger of stage {stage.name}: an input is committed twice")
        found[stage.name] = entry
    return {"run": run.root.uri(), "stages": found, "problems": problems, "ok": not problems}


def _inputs_of(run: RunDir, stage) -> set[str] | None:
    if stage.input_table is None:
        state_path = run.root.join("run.json")
        if not state_path.exists():
            return None
        with state_path.fs.open_input_stream(state_path.path) as stream:
            state = json.loads(stream.read().decode())
        source = state.get("stages", {}).get(stage.name, {}).get("last_run", {}).get("input")
        if not source:
            return None
        from curation.sources import list_inputs

        try:
            return set(list_inputs(source))
        except FileNotFoundError:
            return None
    if not run.has(stage.input_table):
        return set()
    return set(stage.read_inputs(run, [stage.input_id]).column(stage.input_id).to_pylist())


def render(books: dict) -> str:
    lines = [f"run {books['run']}"]
    for name, e in books["stages"].items():
        waiting = "" if e["not_yet_run"] in (None, 0) else f", {e['not_yet_run']} not yet run"
        lines.append(f"  {name:<8} {e['inputs'] if e['inputs'] is not None else '?'} inputs: {e['finished']} finished"
                     f"{waiting} -> {e['table']} {e['rows']} rows {e['by_status']}, "
                     f"{e['errors']} errors, {e['empty']} empty")
    lines += [f"  PROBLEM: {p}" for p in books["problems"]] or ["  books balance"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--json", action="store_true", help="print the books as JSON")
    args = parser.parse_args(argv)
    run = RunDir.of(args.run_dir)
    if not run.root.exists():
        raise UserError(f"{args.run_dir}: no such run directory")
    books = inspect(run)
    print(json.dumps(books, indent=2) if args.json else render(books))
    return 0 if books["ok"] else 1


if __name__ == "__main__":
    sys.exit(cli(main))

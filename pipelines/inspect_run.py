"""Check a run directory's books: every input in exactly one place, every part readable.

    python -m pipelines.inspect_run --run-dir RUN [--json]
    python -m pipelines.inspect_run --run-dir RUN --html out.html   # the contact sheet (pipelines/contact_sheet.py)
    python -m pipelines.inspect_run --run-dir RUN --sample SAMPLE_ID  # one training record, readably

For each stage that has run: its inputs as the stage declares them (``pipelines/job.py``
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

from curation.sources import list_inputs
from curation.thumbnails import thumbnail
from pipelines.cli import Parser, UserError, cli
from pipelines.contact_sheet import contact_sheet
from pipelines.ledger import RunDir
from pipelines.stages import STAGES
from schemas.tables import key_of, schema_for
from schemas.validate import SchemaError


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
            broken = _first_broken(run, stage, ledger_rows)
            problems.append(f"{stage.table}: ledger counts {sum(statuses.values())} rows, table holds {len(keys)}"
                            + (f"; first broken input: {broken}" if broken else ""))
        if errored != stage_errors:
            problems.append(f"errors of stage {stage.name}: ledger names {len(errored)}, table holds {len(stage_errors)}")
        if len(ledger_rows) != len(finished):
            problems.append(f"ledger of stage {stage.name}: an input is committed twice")
        found[stage.name] = entry
    return {"run": run.root.uri(), "stages": found, "problems": problems, "ok": not problems}


def _first_broken(run: RunDir, stage, ledger_rows: list[dict]) -> str | None:
    """The first input (in ledger order) whose rows in its committed part differ from its ledger count.

    Each ledger row names the part its input's rows went to; the part holds the input's
    id when the stage's table has the input column (clips: ``video_id``, stages 2-4:
    ``clip_id``), else only the part's total can be compared and its first input is named.
    """
    import pyarrow.parquet as pq

    folder = run.table(stage.table)
    by_part: dict[str, list[dict]] = collections.defaultdict(list)
    for row in ledger_rows:
        by_part[row["part"]].append(row)
    id_column = stage.input_id if stage.input_id in schema_for(stage.table).names else None
    for part, rows in sorted(by_part.items(), key=lambda item: min(r["time"] for r in item[1])):
        path = folder.join(f"part-{stage.name}-{part}.parquet")
        found: collections.Counter = collections.Counter()
        if path.exists():
            if id_column:
                found.update(pq.read_table(path.path, filesystem=path.fs, columns=[id_column]).column(id_column).to_pylist())
            else:
                found[None] = pq.read_metadata(path.path, filesystem=path.fs).num_rows
        if id_column:
            for row in rows:
                if found[row["input"]] != row["rows"]:
                    return f"{row['input']} (ledger: {row['rows']} rows, {path.uri()}: {found[row['input']]})"
        elif found[None] != sum(r["rows"] for r in rows):
            return f"{rows[0]['input']} or another input of {path.uri()}"
    return None


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


def render_samples(run: RunDir, limit: int = 20) -> str:
    """The samples table at a glance: one line per sample (the first ``limit``), and how to look closer."""
    import pyarrow.dataset as pads

    folder = run.table("samples")
    if not run.has("samples"):
        return f"samples: none yet in {folder.uri()}"
    dataset = pads.dataset(folder.path, filesystem=folder.fs, format="parquet")
    total = dataset.count_rows()
    rows = sorted(dataset.head(limit).to_pylist(), key=lambda r: r["sample_id"])
    lines = [f"samples: {total} rows in {folder.uri()}",
             f"  {'sample_id':<46} {'faces':>5} {'objects':>7} {'bg':>3}  {'variants':<26} words"]
    for row in rows:
        items = (row["faces"] or []) + (row["objects"] or [])
        sources = collections.Counter(item["variant_source"] or "none" for item in items)
        lines.append(f"  {row['sample_id']:<46} {len(row['faces'] or []):>5} {len(row['objects'] or []):>7} "
                     f"{'yes' if row['background'] else 'no':>3}  "
                     f"{', '.join(f'{k} {v}' for k, v in sorted(sources.items())):<26} "
                     f"{', '.join(row['subject_words'] or [])}")
    if total > len(rows):
        lines.append(f"  ... {total - len(rows)} more")
    lines.append(f"  look at them: python -m pipelines.inspect_run --run-dir {run.root.uri()} --html sheet.html "
                 f"(or --sample SAMPLE_ID)")
    return "\n".join(lines)


def describe_sample(run: RunDir, sample_id: str) -> str | None:
    """One ``samples`` row as text: clip, caption, words, each reference with its variant, provenance."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    folder = run.table("samples")
    if not folder.exists():
        return None
    rows = pads.dataset(folder.path, filesystem=folder.fs, format="parquet").to_table(
        filter=pc.field("sample_id") == sample_id).to_pylist()
    if not rows:
        return None
    row = rows[0]

    def size(png: bytes | None) -> str:
        return "none" if not png else "{}x{} PNG".format(*thumbnail(png, 1)[1])

    lines = [f"sample {row['sample_id']}",
             f"  clip       {row['clip_id']}",
             f"  video      {row['uri']} frames [{row['start_frame']}, {row['end_frame']}) "
             f"{row['start_s'] or 0:.3f}-{row['end_s'] or 0:.3f} s @ {row['fps'] or 0:.3g} fps",
             f"  caption    {row['caption']}",
             f"  words      {', '.join(row['subject_words'] or []) or '(none)'}"]
    for kind in ("faces", "objects"):
        for item in row[kind] or []:
            lines.append(f"  {kind[:-1]:<7} {item['label'] or '(no word)':<12} ref {size(item['ref'])} from "
                         f"{item['source_id']}; variant {size(item['variant'])} "
                         f"({item['variant_source'] or 'none'}: {item['variant_id'] or '-'})")
    lines.append(f"  background {size(row['background'])} ({row['background_id'] or 'none'})")
    lines.append("  provenance " + json.dumps(json.loads(row["provenance"] or "{}"), indent=2, sort_keys=True)
                 .replace("\n", "\n  "))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", help="the run directory to check (required)")
    parser.add_argument("run_dir_arg", nargs="?", help=argparse.SUPPRESS)  # the old positional form
    parser.add_argument("--json", action="store_true", help="print the books as JSON")
    parser.add_argument("--html", metavar="OUT.html", help="also write the run's contact sheet (self-contained HTML)")
    parser.add_argument("--html-samples", type=int, default=100, help="samples shown in the contact sheet")
    parser.add_argument("--per-reason", type=int, default=4, help="dropped rows shown per reason")
    parser.add_argument("--sample", metavar="SAMPLE_ID", help="print one sample record and exit")
    args = parser.parse_args(argv)
    args.run_dir = args.run_dir or args.run_dir_arg
    if not args.run_dir:
        parser.error("the following arguments are required: --run-dir")
    run = RunDir.of(args.run_dir)
    if not run.root.exists():
        raise UserError(f"{args.run_dir}: no such run directory")
    if args.sample:
        text = describe_sample(run, args.sample)
        if text is None:
            raise UserError(f"no sample {args.sample!r} in {run.table('samples').uri()}; see them all with "
                            f"python -m pipelines.inspect_run --run-dir {args.run_dir} --html sheet.html")
        print(text)
        return 0
    books = inspect(run)
    print(json.dumps(books, indent=2) if args.json else render(books))
    if args.html:
        with open(args.html, "w", encoding="utf-8") as out:
            out.write(contact_sheet(run, render(books), args.html_samples, args.per_reason))
        print(f"contact sheet: {os.path.abspath(args.html)}")
    return 0 if books["ok"] else 1


if __name__ == "__main__":
    sys.exit(cli(main))

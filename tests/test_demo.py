"""The README's two commands stay true: the demo runs end to end, the test command is CI's."""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, run_script, start_script

from pipelines.ledger import RunDir
from pipelines.stages import STAGES


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Set up and run (two commands)", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_has_exactly_the_two_commands_ci_runs():
    demo, tests = readme_commands()
    assert demo.startswith("bash scripts/setup.sh && ") and "pipelines/run_all.py --demo" in demo
    assert tests == "bash scripts/setup.sh && .venv/bin/python -m pytest -q"
    ci = subprocess.run(["bash", str(ROOT / ".ci" / "run"), "--list"], capture_output=True, text=True, check=True)
    assert ci.stdout.splitlines() == [demo, tests]  # CI runs exactly these, and nothing else


@pytest.fixture(scope="module")
def readme_demo(tmp_path_factory):
    """The README's demo command, run once for this module: (finished process, run directory)."""
    demo = readme_commands()[0].split(" && ", 1)[1]
    run = tmp_path_factory.mktemp("demo") / "demo_run"
    args = demo.replace(".venv/bin/python ", "").replace("demo_run", str(run)).split()
    return run_script(args, timeout=1200), run


@pytest.mark.slow
def test_demo_command_runs_offline_end_to_end(readme_demo):
    result, run_path = readme_demo
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"== stage probe: 11 inputs", out) and "== stage clips:" in out and "== stage faces:" in out
    assert out.count("every input accounted for") == len(STAGES) and "books balance" in out  # every stage ran
    assert "== stage objects:" in out and "== stage pairs:" in out and "== stage samples:" in out
    run = RunDir.of(str(run_path))
    clips = run.read("clips").to_pylist()
    kept = [c for c in clips if c["status"] == "kept"]
    assert kept and all(c["caption"] for c in kept)  # tiny Qwen2.5-VL wrote something
    assert len(run.read("errors").to_pylist()) == 6  # the bad corpus, each named
    faces = run.read("faces", ["clip_id", "selected"]).to_pylist()  # the astronaut video's references
    assert any(f["selected"] for f in faces) and {f["clip_id"] for f in faces} <= {c["clip_id"] for c in kept}


@pytest.mark.slow
def test_demo_output_is_quiet_and_shows_progress(readme_demo):
    """No Ray INFO (plans, progress dumps, C++ lines, workers' logs); stage i of N and committed counts."""
    result, _ = readme_demo
    text = result.stdout + result.stderr
    assert not re.search(r"\bINFO\b", text), [line for line in text.splitlines() if "INFO" in line][:5]
    assert not re.search(r"^\[[\d\- :,]+ [IWE] \d+ \d+\]", text, re.M)  # Ray's C++ log lines
    assert "MapWorker(" not in text and "Execution plan" not in text
    from pipelines.stages import STAGES

    stages = STAGES
    for i, stage in enumerate(stages, 1):
        assert f"stage {i} of {len(stages)}: {stage.name}" in text
    assert re.search(r"\[1/\d+\] probe: 11/11 inputs committed", text)  # not a tty: plain lines


def reference_hashes(run: RunDir) -> dict[str, list]:
    """Per sample: hashes of every reference, variant and background, in canvas order."""
    def h(data):
        return hashlib.blake2b(data, digest_size=8).hexdigest() if data else None

    return {row["sample_id"]: [(kind, item["source_id"], h(item["ref"]), item["variant_source"], h(item["variant"]))
                               for kind in ("faces", "objects") for item in row[kind]] + [h(row["background"])]
            for row in run.read("samples").to_pylist()}


@pytest.mark.slow
def test_demo_ends_in_a_valid_samples_table_with_variants_and_backgrounds(readme_demo):
    from schemas.validate import validate

    result, run_path = readme_demo
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    tail = result.stdout[result.stdout.rindex("books balance"):]
    assert re.search(r"samples: [1-9]\d* rows in ", tail), tail  # the run ends in its samples table
    for part in sorted((run_path / "samples").glob("*.parquet")):
        validate(pq.read_table(part), "samples", source=str(part))
    samples = RunDir.of(str(run_path)).read("samples").to_pylist()
    assert samples
    for sample in samples:
        items = [item for kind in ("faces", "objects") for item in sample[kind]]
        assert items and all(item["ref"] and item["variant"] and item["variant_source"] for item in items)
        assert sample["background"] and sample["background_id"]
        assert 2 <= len(items) + 1 <= 8


@pytest.mark.slow
def test_a_deleted_output_row_breaks_the_books_naming_its_input(readme_demo, tmp_path):
    result, run_path = readme_demo
    assert result.returncode == 0
    broken = tmp_path / "broken_run"
    shutil.copytree(run_path, broken)
    part = next(p for p in sorted((broken / "faces").glob("*.parquet")) if pq.read_metadata(p).num_rows)
    rows = pq.read_table(part)
    victim = rows.column("clip_id")[0].as_py()
    pq.write_table(rows.slice(1), part)
    check = run_script(["-m", "pipelines.inspect_run", str(broken)])
    assert check.returncode == 1, check.stdout
    assert f"first broken input: {victim}" in check.stdout and "PROBLEM: faces" in check.stdout


@pytest.mark.slow
def test_run_all_killed_during_stage_3_finishes_with_the_same_samples(readme_demo, tmp_path):
    result, run_path = readme_demo
    assert result.returncode == 0
    run = tmp_path / "killed_run"
    args = [str(ROOT / "pipelines" / "run_all.py"), "--demo", "--run-dir", str(run)]
    proc = start_script(args)
    lock = run / "_locks" / "faces.lock"
    deadline = time.time() + 900
    while time.time() < deadline and not lock.exists() and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(3)  # into stage 3's work
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert lock.exists(), "the kill must land during stage 3 for this test to mean anything"
    assert not list((run / "_ledger" / "pairs").glob("*.parquet"))  # stage 4 had not started

    again = run_script(args, timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "took over the lock of a job that is gone" in again.stdout
    assert reference_hashes(RunDir.of(str(run))) == reference_hashes(RunDir.of(str(run_path)))

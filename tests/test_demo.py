"""The README's two commands stay true: the demo runs end to end, the test command is CI's."""

import re

import pytest

from conftest import ROOT, run_script
from pipelines.ledger import RunDir


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Set up and run (two commands)", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_has_exactly_the_two_commands_ci_runs():
    demo, tests = readme_commands()
    assert demo.startswith("bash scripts/setup.sh && ") and "pipelines/run_all.py --demo" in demo
    assert tests == "bash scripts/setup.sh && .venv/bin/python -m pytest -q"
    assert "bash scripts/setup.sh" in (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest -q" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_demo_command_runs_offline_end_to_end(tmp_path):
    demo = readme_commands()[0].split(" && ", 1)[1]
    args = demo.replace(".venv/bin/python ", "").replace("demo_run", str(tmp_path / "demo_run")).split()
    result = run_script(args, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"== stage probe: 10 inputs", out) and "== stage clips:" in out and "== stage faces:" in out
    from pipelines.run_all import available_stages

    stages = available_stages()  # every stage whose script exists runs in the demo
    assert out.count("every input accounted for") == len(stages) and "books balance" in out
    if "objects" in {stage.name for stage in stages}:
        assert "== stage objects:" in out
    run = RunDir.of(str(tmp_path / "demo_run"))
    clips = run.read("clips").to_pylist()
    kept = [c for c in clips if c["status"] == "kept"]
    assert kept and all(c["caption"] for c in kept)  # tiny Qwen2.5-VL wrote something
    assert len(run.read("errors").to_pylist()) == 6  # the bad corpus, each named
    faces = run.read("faces", ["clip_id", "selected"]).to_pylist()  # the astronaut video's references
    assert any(f["selected"] for f in faces) and {f["clip_id"] for f in faces} <= {c["clip_id"] for c in kept}

"""``--verbose`` brings Ray's own output back; ``--progress bar`` is a tqdm bar (the default on a terminal)."""

import re

import pytest
from conftest import run_script


@pytest.mark.slow
def test_verbose_restores_ray_output_and_bar_mode_draws_a_bar(corpus, tmp_path):
    result = run_script(["pipelines/stage0_probe.py", "--input", str(corpus["root"]), "--run-dir",
                         str(tmp_path / "run"), "--verbose", "--progress", "bar"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"\bINFO\b", result.stderr)  # Ray's own lines are back
    assert re.search(r"probe: 100%\|.*\| (\d+)/\1 ", result.stderr), result.stderr[-2000:]  # tqdm's bar
    assert "every input accounted for" in result.stdout

"""Shared fixtures: one embedded Ray for the whole session, generated media once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every test that needs it (a cold start costs 3-7 s)."""
    import ray

    # Workers import our packages, and the test modules that define toy operators.
    paths = [str(ROOT), str(ROOT / "tests"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Six good videos and one of each bad kind, in one folder (bad ones under bad/)."""
    from curation import synthetic

    folder = tmp_path_factory.mktemp("corpus")
    good = synthetic.good_corpus(folder / "good", count=6, seconds=1.0)
    bad = synthetic.bad_corpus(folder / "bad")
    return {"root": folder, "good": good, "bad": bad}


def script_env() -> dict[str, str]:
    """A project script's environment: this checkout first on the path, no inherited cluster."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return env


def run_script(args: list[str], timeout: float = 300, **kwargs):
    """Run a project script the way a user does (fresh interpreter, cwd = repo root)."""
    import subprocess

    return subprocess.run([sys.executable, *args], cwd=ROOT, env=script_env(), capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def start_script(args: list[str]):
    """Start a project script in its own session (a test may SIGKILL the whole group), output discarded."""
    import subprocess

    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=script_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

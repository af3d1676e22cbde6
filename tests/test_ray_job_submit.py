"""`ray job submit` against a real head node with token authentication on."""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT
from local_cluster import MARKER, PORT_FLAGS, SLOW_START, free_port, pids_under

from pipelines.ledger import RunDir

BIN = Path(sys.executable).parent
# The head's job API listens on a free port, named in the fixture's env as
# RAY_API_SERVER_ADDRESS (what `ray job` reads): a fixed 8265 could be taken by any other
# Ray with a dashboard on this machine, and submissions would then reach that one.
ADDRESS = "RAY_API_SERVER_ADDRESS"


@pytest.fixture
def head_node(tmp_path_factory):
    base = tmp_path_factory.mktemp("rayhead")
    token_file = base / "token"
    token_file.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **SLOW_START}
    env.pop("RAY_ADDRESS", None)
    temp_dir = f"/tmp/magref-ray-{secrets.token_hex(4)}"  # short: Ray's socket paths have a length limit
    env[MARKER] = temp_dir
    dashboard = free_port()
    # Every port free, not Ray's defaults: any other Ray on this machine (an embedded one in
    # someone's tests included) holds 8265 / 52365 and the like.
    ports = ["--port", *PORT_FLAGS]
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
         *[item for flag in ports for item in (flag, str(free_port()))], "--num-cpus", "2",
         "--disable-usage-stats", "--temp-dir", temp_dir],
        env=env, capture_output=True, text=True, timeout=120)
    try:
        assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
        env[ADDRESS] = f"http://127.0.0.1:{dashboard}"
        yield env, base
    finally:
        for pid in pids_under(temp_dir):  # the head's processes, the job drivers' too
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit_until_agent_answers(command: list[str], env: dict[str, str], run: Path) -> None:
    """Submit stage 0 and check it finished: the head's job agent comes up a few seconds after `ray start`."""
    deadline = time.time() + 120
    while True:
        job = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        if "No available agent" not in job.stderr or time.time() > deadline:
            break
        time.sleep(2)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "every input accounted for" in job.stdout
    assert RunDir.of(str(run)).read("videos").num_rows == 6


@pytest.mark.slow
def test_job_submit_with_token_and_refused_without(head_node, corpus, tmp_path):
    env, base = head_node
    address = env[ADDRESS]
    token = subprocess.run([str(BIN / "ray"), "get-auth-token"], env=env, capture_output=True, text=True,
                           timeout=60).stdout.strip()
    assert token and token == (base / "token").read_text().strip()

    run = tmp_path / "run"
    submit_env = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN_PATH"}
    submit_env["RAY_AUTH_TOKEN"] = token  # what a user does with the token `ray get-auth-token` printed
    submit = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".", "--",
              "python", "pipelines/stage0_probe.py", "--input", str(corpus["root"]), "--run-dir", str(run)]
    submit_until_agent_answers(submit, submit_env, run)
    assert RunDir.of(str(run)).read("errors").num_rows == 6

    wrong = {**submit_env, "RAY_AUTH_TOKEN": secrets.token_hex(32), "HOME": str(tmp_path)}
    refused = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--", "python", "-c", "print('ran')"],
        cwd=ROOT, env=wrong, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "ran" not in refused.stdout
    assert "token" in (refused.stdout + refused.stderr).lower()
    with pytest.raises(urllib.error.HTTPError) as http:  # the job API itself, no token at all
        urllib.request.urlopen(f"{address}/api/jobs/", timeout=30)
    assert http.value.code == 401


def readme_self_started_head() -> list[str]:
    """README's commands for a cluster you start yourself (On a cluster), continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    block = text.split("A cluster you start yourself", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_self_started_head_commands_run_as_written(corpus, tmp_path):
    """The README's `ray start --head` + `ray job submit` lines, with only ports, paths and HOME changed."""
    generate, start, submit = readme_self_started_head()
    assert generate == "ray get-auth-token --generate"
    assert start.startswith("RAY_AUTH_MODE=token ray start --head") and "RAY_AUTH_MODE=token" in submit
    temp_dir = f"/tmp/magref-ray-{secrets.token_hex(4)}"
    dashboard = free_port()
    ports = ["--port", *PORT_FLAGS]
    start += f" --dashboard-port {dashboard} " + " ".join(f"{flag} {free_port()}" for flag in ports)
    start += f" --num-cpus 2 --disable-usage-stats --temp-dir {temp_dir}"
    run = tmp_path / "run"
    submit = (submit.replace("8265", str(dashboard)).replace("/data/raw_videos", str(corpus["root"]))
              .replace("/data/runs/r1", str(run)))
    home = tmp_path / "home"  # ~/.ray/auth_token is written here by the head, read by get-auth-token
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", MARKER: temp_dir,
           **SLOW_START}
    for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    try:
        made = subprocess.run(["bash", "-c", generate], env=env, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr[-2000:]
        started = subprocess.run(["bash", "-c", start], env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stderr[-2000:]
        assert (home / ".ray" / "auth_token").exists()
        submit_until_agent_answers(["bash", "-c", submit], env, run)
    finally:
        for pid in pids_under(temp_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)

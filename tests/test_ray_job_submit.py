"""`ray job submit` against a real head node with token authentication on."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT
from pipelines.ledger import RunDir

BIN = Path(sys.executable).parent
DASHBOARD = "http://127.0.0.1:8265"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_under(marker: str) -> list[int]:
    """Processes whose command line names our cluster's own temp dir: ours and only ours."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@pytest.fixture
def head_node(tmp_path_factory):
    base = tmp_path_factory.mktemp("rayhead")
    token_file = base / "token"
    token_file.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    temp_dir = f"/tmp/magref-ray-{secrets.token_hex(4)}"  # short: Ray's socket paths have a length limit
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--port", str(free_port()), "--dashboard-host", "127.0.0.1",
         "--dashboard-port", "8265", "--ray-client-server-port", str(free_port()), "--num-cpus", "2",
         "--disable-usage-stats", "--temp-dir", temp_dir],
        env=env, capture_output=True, text=True, timeout=120)
    try:
        assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
        yield env, base
    finally:
        for pid in pids_under(temp_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_job_submit_with_token_and_refused_without(head_node, corpus, tmp_path):
    env, base = head_node
    token = subprocess.run([str(BIN / "ray"), "get-auth-token"], env=env, capture_output=True, text=True,
                           timeout=60).stdout.strip()
    assert token and token == (base / "token").read_text().strip()

    run = tmp_path / "run"
    submit_env = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN_PATH"}
    submit_env["RAY_AUTH_TOKEN"] = token  # what a user does with the token `ray get-auth-token` printed
    submit = [str(BIN / "ray"), "job", "submit", "--address", DASHBOARD, "--working-dir", ".", "--",
              "python", "pipelines/stage0_probe.py", "--input", str(corpus["root"]), "--run-dir", str(run)]
    deadline = time.time() + 120
    while True:  # the head's job agent comes up a few seconds after `ray start` returns
        job = subprocess.run(submit, cwd=ROOT, env=submit_env, capture_output=True, text=True, timeout=300)
        if "No available agent" not in job.stderr or time.time() > deadline:
            break
        time.sleep(2)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "every input accounted for" in job.stdout
    assert RunDir.of(str(run)).read("videos").num_rows == 6
    assert RunDir.of(str(run)).read("errors").num_rows == 6

    wrong = {**submit_env, "RAY_AUTH_TOKEN": secrets.token_hex(32), "HOME": str(tmp_path)}
    refused = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", DASHBOARD, "--", "python", "-c", "print('ran')"],
        cwd=ROOT, env=wrong, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "ran" not in refused.stdout
    assert "token" in (refused.stdout + refused.stderr).lower()
    with pytest.raises(urllib.error.HTTPError) as http:  # the job API itself, no token at all
        urllib.request.urlopen(f"{DASHBOARD}/api/jobs/", timeout=30)
    assert http.value.code == 401

"""Ray clusters a test starts itself with ``ray start`` (free ports, own temp dir) and stops by pids.

Never ``ray stop`` (it ends every Ray on the machine) and never
``ray.cluster_utils.AutoscalingCluster`` (it runs ``ray stop --force``): every process of a
cluster started here carries a marker in its environment, and :func:`kill_marked` kills those.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
MARKER = "MAGREF_TEST_RAY_CLUSTER"  # set in a cluster's environment: every process it starts inherits it
# Every port free, not Ray's defaults: any other Ray on this machine holds 8265 / 10001 / 52365...
PORT_FLAGS = ("--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
              "--runtime-env-agent-port", "--metrics-export-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_under(marker: str) -> list[int]:
    """Processes whose command line or environment names ``marker``: ours and only ours.

    The environment matters: Ray's agents rename themselves (``ray::DashboardAgent``), so
    their command line no longer names the cluster, and one left running keeps its ports.
    """
    found = []
    needle = marker.encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if needle in (proc / "cmdline").read_bytes() or needle in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def kill_marked(marker: str) -> int:
    """SIGKILL every process carrying ``marker``; returns how many."""
    pids = pids_under(marker)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


# A loaded CI machine can take longer than Ray's 60 s to register a node: give it 180.
SLOW_START = {"RAY_raylet_start_wait_time_s": "180"}


def new_temp_dir() -> str:
    return f"/tmp/magref-ray-{secrets.token_hex(4)}"  # short: Ray's socket paths have a length limit


def start_head(env: dict[str, str], temp_dir: str, *extra: str) -> tuple[int, int]:
    """``ray start --head`` on free ports with ``env`` (which must carry ``MARKER``); (gcs port, dashboard port)."""
    port, dashboard = free_port(), free_port()
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--port", str(port), "--dashboard-host", "127.0.0.1",
         "--dashboard-port", str(dashboard), *[item for flag in PORT_FLAGS for item in (flag, str(free_port()))],
         "--disable-usage-stats", "--temp-dir", temp_dir, *extra],
        env={**env, **SLOW_START}, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
    return port, dashboard


def start_worker(env: dict[str, str], gcs_port: int, *extra: str) -> None:
    """``ray start --address`` a worker node into the cluster at ``gcs_port`` (its own ``MARKER`` in ``env``)."""
    ports = ["--node-manager-port", "--object-manager-port", *PORT_FLAGS[1:]]
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--address", f"127.0.0.1:{gcs_port}",
         *[item for flag in ports for item in (flag, str(free_port()))], "--disable-usage-stats", *extra],
        env={**env, **SLOW_START}, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]


def stop(temp_dir: str) -> None:
    kill_marked(temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)

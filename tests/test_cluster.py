"""On a cluster: GPU nodes started on demand by declaration (Ray's fake multi-node autoscaler),
and a whole worker node lost mid-stage (kill -9 of its raylet and workers).

Clusters are started with ``ray start`` on free ports and stopped by their own pids
(``tests/local_cluster.py``); the fake autoscaler's nodes are local processes with the
resources their node type declares.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml
from conftest import ROOT, script_env
from local_cluster import BIN, MARKER, PORT_FLAGS, SLOW_START, free_port, kill_marked, new_temp_dir, start_head, start_worker, stop

from curation import synthetic
from pipelines.ledger import RunDir

# Stage 1 with --gpus auto asks at once for TransNetV2 (2 actors x 0.25 GPU), the aesthetic
# scorer (0.25) and the captioner (1): one fake "gpu" node of 2 GPUs fits them all.
GPU_NODE = {"CPU": 4, "GPU": 2}


def cluster_config(gcs_port: int) -> dict:
    """A fake_multinode autoscaler config: a CPU head, GPU workers from 0 (as in ray_cluster.yaml)."""
    return {
        "cluster_name": "magref-test", "max_workers": 1, "idle_timeout_minutes": 5,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{gcs_port}"},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 2}, "node_config": {}, "max_workers": 0},
            "gpu": {"resources": GPU_NODE, "node_config": {}, "min_workers": 0, "max_workers": 1},
        },
        "head_node_type": "ray.head.default",
        **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                               "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")},
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
    }


def videos(folder: Path, count: int) -> Path:
    """A list file of ``count`` distinct generated 2.5 s videos (one clip each at min_seconds 2)."""
    paths = synthetic.good_corpus(folder, count=count, seconds=2.5)
    listing = folder / "videos.txt"
    listing.write_text("\n".join(map(str, paths)) + "\n")
    return listing


def job(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def rows(run: Path, table: str = "clips") -> list[tuple]:
    t = RunDir.of(str(run)).read(table).sort_by("clip_id")
    return list(zip(*(t.column(c).to_pylist() for c in ("clip_id", "status", "start_frame", "end_frame"))))


@pytest.fixture
def fake_cluster(tmp_path):
    """A head with the fake autoscaler; HOME holds ray_bootstrap_config.yaml as `ray up` leaves it."""
    home = tmp_path / "home"
    home.mkdir()
    temp_dir = new_temp_dir()
    env = {**script_env(), "HOME": str(home), "RAY_AUTH_MODE": "disabled", "RAY_FAKE_CLUSTER": "1",
           MARKER: temp_dir, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_SCHEDULER_EVENTS": "0"}

    gcs = free_port()
    config = home / "ray_bootstrap_config.yaml"
    config.write_text(yaml.safe_dump(cluster_config(gcs)))
    try:
        # start_head picks its own free port; the fake provider must join the one in the config.
        port, dashboard = _start_fake_head(env, temp_dir, gcs, config)
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        yield env, f"http://127.0.0.1:{dashboard}"
    finally:
        stop(temp_dir)


def _start_fake_head(env, temp_dir, gcs, config):

    dashboard = free_port()
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1",
         "--dashboard-port", str(dashboard), *[item for flag in PORT_FLAGS for item in (flag, str(free_port()))],
         "--disable-usage-stats", "--temp-dir", temp_dir, f"--autoscaling-config={config}",
         "--num-cpus", "2", "--num-gpus", "0"],
        env={**env, **SLOW_START}, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
    return gcs, dashboard


class Watcher(threading.Thread):
    """Polls the cluster's state API: when the GPU node came up, when each actor class was placed, where."""

    def __init__(self, dashboard: str):
        super().__init__(daemon=True)
        self.dashboard, self.stopped = dashboard, threading.Event()
        self.gpu_node: tuple[str, float] | None = None
        self.actors: dict[str, tuple[str, float]] = {}  # class name -> (node id, first seen alive)

    def run(self) -> None:
        from ray.util.state import list_actors, list_nodes

        while not self.stopped.is_set():
            try:
                now = time.time()
                for node in list_nodes(address=self.dashboard, raise_on_missing_output=False):
                    if node.state == "ALIVE" and node.resources_total.get("GPU") and self.gpu_node is None:
                        self.gpu_node = (node.node_id, now)
                for actor in list_actors(address=self.dashboard, filters=[("state", "=", "ALIVE")],
                                         raise_on_missing_output=False):
                    self.actors.setdefault(actor.class_name, (actor.node_id, now))
            except Exception:  # the dashboard answers a moment after the head starts
                pass
            self.stopped.wait(0.5)


@pytest.mark.slow
def test_gpu_node_starts_on_demand_with_gpus_auto_and_not_with_gpus_off(fake_cluster, tmp_path, monkeypatch):
    env, dashboard = fake_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # this process's state-API calls to that head
    listing = videos(tmp_path / "media", 2)
    off, auto = tmp_path / "off", tmp_path / "auto"
    probe = job(env, "pipelines/stage0_probe.py", "--input", str(listing), "--run-dir", str(off))
    assert probe.returncode == 0, probe.stderr[-3000:]
    shutil.copytree(off / "videos", auto / "videos")
    stage1 = ["pipelines/stage1_clips.py", "--models", "tiny"]

    watcher = Watcher(dashboard)
    watcher.start()
    cpu = job(env, *stage1, "--run-dir", str(off), "--gpus", "off")
    assert cpu.returncode == 0, cpu.stderr[-3000:]
    assert watcher.gpu_node is None  # nothing asked for a GPU: no GPU node started

    watcher.actors.clear()  # the CPU run's actors (all on the head) are gone
    requested = time.time()
    gpu = job(env, *stage1, "--run-dir", str(auto), "--gpus", "auto")
    watcher.stopped.set()
    watcher.join(5)
    assert gpu.returncode == 0, gpu.stderr[-3000:]
    assert watcher.gpu_node, "the autoscaler never started the gpu node type"
    node, node_up = watcher.gpu_node
    placed = {name: info for name, info in watcher.actors.items()
              if any(step in name for step in ("Captioner", "ClipSplitter", "ClipScorer"))}
    assert placed and all(where == node for where, _ in placed.values()), (node, watcher.actors)
    assert any("Captioner" in name for name in placed)  # TransNetV2 ran there too: detector auto -> transnetv2
    assert rows(off) == rows(auto)  # same clips either way (the splitter differs only in where it runs)
    timeline = {"node_up_s": round(node_up - requested, 1),
                **{name: round(at - requested, 1) for name, (_, at) in sorted(placed.items())}}
    print("timeline (s after the job started):", json.dumps(timeline))
    (ROOT / ".pytest_cache").mkdir(exist_ok=True)
    (ROOT / ".pytest_cache" / "gpu_timeline.json").write_text(json.dumps(timeline))


@pytest.fixture
def two_node_cluster(tmp_path):
    """A 1-CPU head and one 2-CPU worker node ("spot"), each with its own marker for kill -9."""
    temp_dir = new_temp_dir()
    env = {**script_env(), "HOME": str(tmp_path), "RAY_AUTH_MODE": "disabled", MARKER: temp_dir,
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    try:
        port, _ = start_head(env, temp_dir, "--num-cpus", "1", "--include-dashboard", "false")
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        yield env, port, temp_dir
    finally:
        stop(temp_dir)


@pytest.mark.slow
def test_a_lost_worker_node_mid_stage_gives_the_rows_of_an_uninterrupted_run(two_node_cluster, tmp_path):
    env, port, temp_dir = two_node_cluster
    spot = f"{temp_dir}-spot1"
    start_worker({**env, MARKER: spot}, port, "--num-cpus", "2")
    listing = videos(tmp_path / "media", 6)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert job(env, "pipelines/stage0_probe.py", "--input", str(listing), "--run-dir", str(whole)).returncode == 0
    shutil.copytree(whole / "videos", killed / "videos")
    # The scorer's actors need 1.5 CPUs: only a worker node holds one, so the work is there.
    stage1 = ["pipelines/stage1_clips.py", "--set", "caption.enabled=false", "--set", "quality.pool.num_cpus=1.5",
              "--set", "scenes.pool.batch_size=1", "--set", "quality.pool.batch_size=1",
              "--gpus", "off", "--models", "tiny", "--part-inputs", "1"]
    reference = job(env, *stage1, "--run-dir", str(whole))
    assert reference.returncode == 0, reference.stderr[-3000:]

    driver = subprocess.Popen([sys.executable, *stage1, "--run-dir", str(killed)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ledger = killed / "_ledger" / "clips"
    deadline = time.time() + 240
    while not (ledger.exists() and any(ledger.iterdir())) and driver.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert driver.poll() is None, "the stage finished before the node could be lost"
    assert kill_marked(spot) > 0  # the whole node: raylet, its workers, its agents
    start_worker({**env, MARKER: f"{temp_dir}-spot2"}, port, "--num-cpus", "2")  # the replacement node
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-3000:]
    assert "every input accounted for" in out
    assert rows(killed) == rows(whole) and len(rows(whole)) >= 6
    ids = RunDir.of(str(killed)).read("clips").column("clip_id")
    assert len(pc.unique(ids)) == len(ids)  # no duplicates

"""ray_cluster.yaml is a valid launcher config with auth on and the dashboard private."""

import json
from pathlib import Path

import jsonschema
import ray
import yaml
from conftest import ROOT


def test_cluster_yaml_validates_against_rays_schema_and_is_locked_down():
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)

    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in workers
    assert "--dashboard-host=127.0.0.1" in head
    assert "~/.ray/auth_token" in config["file_mounts"]
    assert any("pip install -e ." in c for c in config["setup_commands"])
    opened = [p["FromPort"] for p in config["provider"]["security_group"]["IpPermissions"]]
    assert opened == [22]


def test_the_gpu_workers_declare_their_gpus_so_gpus_auto_asks_for_them(monkeypatch, tmp_path):
    from pipelines.wiring import declared_gpus

    monkeypatch.setenv("MAGREF_CLUSTER_CONFIG", str(ROOT / "ray_cluster.yaml"))
    assert declared_gpus() == 8  # gpu_worker: GPU 1 x max_workers 8, none of them up at the start
    monkeypatch.setenv("MAGREF_CLUSTER_CONFIG", str(tmp_path / "absent.yaml"))
    assert declared_gpus() == 0

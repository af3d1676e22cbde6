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

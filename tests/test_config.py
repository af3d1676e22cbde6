from dataclasses import dataclass, field

import pytest
import yaml

from curation.operator import TaskPool, setting

from pipelines.cli import parse_models
from pipelines.config import ConfigError, flat_keys, key_help, load_config, to_yaml
from pipelines.stage0_probe import Stage0Config
from pipelines.stage1_clips import Stage1Config


def test_defaults_yaml_and_sets_layer_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("probe:\n  min_side: 32\n  pool:\n    batch_size: 3\n")
    cfg = load_config(Stage0Config, str(path), ["probe.pool.batch_size=4", "extensions=.mp4,.mkv"])
    assert cfg.probe.min_side == 32 and cfg.probe.pool.batch_size == 4 and cfg.extensions == [".mp4", ".mkv"]
    assert cfg.probe.decode_check is True  # untouched default
    assert "probe.min_side" in flat_keys(Stage0Config)


def test_a_section_keeps_its_own_defaults_when_one_key_is_set():
    default = Stage1Config()
    cfg = load_config(Stage1Config, None, ["scenes.pool.num_cpus=1", "caption.pool.actors=3"])
    assert cfg.scenes.pool.batch_size == default.scenes.pool.batch_size == 1  # not TaskPool's class default
    assert cfg.scenes.pool.num_cpus == 1.0
    assert cfg.caption.pool.actors == 3 and cfg.caption.pool.num_gpus == default.caption.pool.num_gpus


@pytest.mark.parametrize("item, message", [
    ("probe.min_sid=3", "unknown config key 'probe.min_sid'"),
    ("probe.min_side=big", "probe.min_side: expected int"),
    ("probe.min_side=0", "min_side must be >= 1"),
    ("probe=3", "probe is a section"),
    ("nokey", "expected key=value"),
    ("probe.pool.actors=4", "'probe.pool.actors' has no effect here: this step loads no model"),
    ("probe.pool.num_gpus=1", "'probe.pool.num_gpus' has no effect here: this step runs on CPUs only"),
])
def test_bad_keys_and_values_are_named(item, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Stage0Config, None, [item])


def test_gpu_steps_have_actor_pools_and_cpu_steps_do_not():
    keys = set(flat_keys(Stage1Config))
    for step in ("quality", "caption"):
        assert {f"{step}.pool.{k}" for k in ("actors", "batch_size", "num_cpus", "num_gpus")} <= keys
    assert "scenes.pool.actors" not in keys and "caption.decode_pool.actors" not in keys
    # one owner per batch size: the old per-operator batch keys are gone
    assert not {"caption.batch_size", "quality.aesthetic_batch", "split_pool.batch_size"} & keys


def test_help_lists_every_key_with_default_and_meaning():
    rows = {key: (default, meaning) for key, default, meaning in key_help(Stage1Config)}
    assert set(rows) == set(flat_keys(Stage1Config))
    assert rows["scenes.min_seconds"] == (2.0, "shorter scenes become too_short rows")
    assert rows["caption.pool.batch_size"][0] == 4 and "per call" in rows["caption.pool.batch_size"][1]
    assert all(meaning for key, (_, meaning) in rows.items() if key != "caption.prompt"), \
        [key for key, (_, meaning) in rows.items() if not meaning]


def test_help_text_is_the_fields_metadata_and_help_prints_it(capsys):
    @dataclass
    class Step:
        speed: float = setting(1.5, help="how fast")
        names: list = setting(factory=lambda: ["a"], help="which ones")
        quiet: bool = False

    @dataclass
    class Toy:
        step: Step = field(default_factory=Step)
        pool: TaskPool = field(default_factory=TaskPool)

    assert key_help(Toy) == [("step.speed", 1.5, "how fast"), ("step.names", ["a"], "which ones"),
                             ("step.quiet", False, ""), ("pool.batch_size", 8, "rows (or whole inputs) per task"),
                             ("pool.num_cpus", 0.5, "CPUs each task asks of Ray")]
    from pipelines.stage1_clips import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    lines = out.splitlines()
    assert any("scenes.min_seconds" in line and "shorter scenes become too_short rows" in line for line in lines)


@pytest.mark.parametrize("config_cls", [Stage0Config, Stage1Config])
def test_printed_config_reads_back_unchanged(tmp_path, config_cls):
    cfg = load_config(config_cls, None, ["probe.min_side=20"] if config_cls is Stage0Config
                      else ["scenes.trim_frames=3", "caption.pool.actors=2"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(config_cls, str(path)) == cfg
    assert yaml.safe_load(path.read_text())  # plain YAML, no python tags


def test_cli_rejects_a_bad_set_with_exit_2(capsys):
    from pipelines.stage0_probe import main

    with pytest.raises(SystemExit) as exc:
        main(["--input", "x", "--run-dir", "y", "--set", "probe.min_side=0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "min_side must be >= 1" in err and len(err.strip().splitlines()) == 1


def test_models_flag():
    assert parse_models([]) == "default"
    assert parse_models(["tiny"]) == "tiny"
    assert parse_models(["captioner=/m/qwen", "tiny"]) == {"captioner": "/m/qwen", "*": "tiny"}
    with pytest.raises(ValueError, match="unknown model role 'captoner'.*known roles: "):
        parse_models(["captoner=tiny"])

import pytest

from pipelines.common import parse_models
from pipelines.config import ConfigError, flat_keys, load_config
from pipelines.stage0_probe import Stage0Config


def test_defaults_yaml_and_sets_layer_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("probe:\n  min_side: 32\npool:\n  actors: 3\n")
    cfg = load_config(Stage0Config, str(path), ["pool.actors=4", "extensions=.mp4,.mkv"])
    assert cfg.probe.min_side == 32 and cfg.pool.actors == 4 and cfg.extensions == [".mp4", ".mkv"]
    assert cfg.probe.decode_check is True  # untouched default
    assert "probe.min_side" in flat_keys(Stage0Config)


@pytest.mark.parametrize("item, message", [
    ("probe.min_sid=3", "unknown config key 'probe.min_sid'"),
    ("probe.min_side=big", "probe.min_side: expected int"),
    ("probe.min_side=0", "min_side must be >= 1"),
    ("pool=3", "pool is a section"),
    ("nokey", "expected key=value"),
])
def test_bad_keys_and_values_are_named(item, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Stage0Config, None, [item])


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("probe:\n  colour: red\n")
    with pytest.raises(ConfigError, match=f"{path}.*probe.colour"):
        load_config(Stage0Config, str(path))


def test_cli_rejects_a_bad_set_with_exit_2(capsys):
    from pipelines.stage0_probe import main

    with pytest.raises(SystemExit) as exc:
        main(["--input", "x", "--run-dir", "y", "--set", "pool.actors=0"])
    assert exc.value.code == 2
    assert "actors must be >= 1" in capsys.readouterr().err


def test_models_flag():
    assert parse_models([]) == "default"
    assert parse_models(["tiny"]) == "tiny"
    assert parse_models(["captioner=/m/qwen", "tiny"]) == {"captioner": "/m/qwen", "*": "tiny"}

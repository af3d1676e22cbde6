"""One command-line vocabulary: every command README shows accepts the flags it is shown with,
and a bad value is one stderr line and exit code 2, never a traceback. In-process (fast)."""

from __future__ import annotations

import importlib
import re

import pytest
from conftest import ROOT

from pipelines.cli import cli
from pipelines.magref_command import COMMANDS
from pipelines.magref_command import main as magref

MODULES = {  # how README spells a command -> its module
    "pipelines/run_all.py": "pipelines.run_all", "pipelines/stage0_probe.py": "pipelines.stage0_probe",
    "pipelines/stage1_clips.py": "pipelines.stage1_clips", "pipelines/stage2_objects.py": "pipelines.stage2_objects",
    "pipelines/stage3_faces.py": "pipelines.stage3_faces", "pipelines/stage4a_variants.py": "pipelines.stage4a_variants",
    "pipelines/stage4b_cross_pairs.py": "pipelines.stage4b_cross_pairs",
    "pipelines/stage4c_samples.py": "pipelines.stage4c_samples", "pipelines.inspect_run": "pipelines.inspect_run",
    "pipelines/cache_latents.py": "pipelines.cache_latents", "pipelines/train_ray.py": "pipelines.train_ray",
    "model.train": "model.train.loop", "model.sample": "model.sample",
}
FLAG = re.compile(r"(?<![\w-])--[a-z][\w-]*")


def readme_commands() -> dict[str, set[str]]:
    """Each command in README's bash blocks with every flag it is shown with (train_ray: before ``--``)."""
    found: dict[str, set[str]] = {}
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            match = re.search(r"python (?:-m )?((?:pipelines|model)[./][\w./]+)(.*)", line)
            if match and match.group(1) in MODULES:
                args = match.group(2).split(" #")[0]
                if match.group(1) == "pipelines/train_ray.py":
                    args = args.split(" -- ")[0]
                found.setdefault(match.group(1), set()).update(FLAG.findall(args))
    return found


def run(main, argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli(main, argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def test_readme_shows_every_command_of_the_vocabulary():
    assert set(readme_commands()) == set(MODULES)


@pytest.mark.parametrize("command", sorted(MODULES))
def test_each_readme_command_accepts_the_flags_it_is_shown_with(command, capsys):
    main = importlib.import_module(MODULES[command]).main
    code, out, err = run(main, ["--help"], capsys)
    assert code == 0, err
    text = out + importlib.import_module(MODULES[command]).__doc__  # cache_latents: model.train's data flags
    missing = sorted(flag for flag in readme_commands()[command] if flag not in text)
    assert not missing, f"{command} does not take {missing}"


BAD = [  # (module, argv, a fragment of the one error line)
    ("pipelines.stage1_clips", ["--run-dir", "r", "--gpus", "maybe"], "--gpus"),
    ("pipelines.stage1_clips", ["--run-dir", "r", "--progress", "fancy"], "--progress"),
    ("pipelines.stage1_clips", ["--run-dir", "r", "--set", "scenes.detector=magic"], "scenes.detector"),
    ("pipelines.stage0_probe", ["--run-dir", "r", "--input", "v", "--limit", "-1"], "--limit"),
    ("pipelines.stage3_faces", ["--run-dir", "r", "--set", "faces.pool.actors=0"], "actors"),
    ("pipelines.run_all", ["--run-dir", "r", "--input", "v", "--gpus", "maybe"], "--gpus"),
    ("pipelines.run_all", ["--run-dir", "r", "--input", "v", "--stages", "nope"], "unknown stage"),
    ("pipelines.inspect_run", ["--run-dir", "/no/such/run"], "no such run directory"),
    ("pipelines.cache_latents", ["--run-dir", "r", "--frames", "many"], "--frames"),
    ("pipelines.cache_latents", ["--run-dir", "r", "--base", "/no/such/backbone"], "does not exist"),
    ("pipelines.train_ray", ["--gpus", "maybe"], "--gpus"),
    ("pipelines.train_ray", ["--workers", "0", "--", "--manifest", "m", "--out", "o"], "--workers"),
    ("model.train.loop", ["--manifest", "/no/such/table", "--out", "o"], "--manifest"),
    ("model.train.loop", ["--steps", "many", "--out", "o"], "--steps"),
    ("model.sample", ["--manifest", "/no/such/table"], "--manifest"),
    ("model.sample", ["--height", "tall"], "--height"),
]


@pytest.mark.parametrize("module,argv,fragment", BAD, ids=[f"{m}:{' '.join(a[-2:])}" for m, a, _ in BAD])
def test_a_bad_value_is_one_line_and_exit_2(module, argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative run dirs land here, and none exists
    code, out, err = run(importlib.import_module(module).main, argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, (code, err)


def test_the_magref_command_runs_each_module_and_names_a_wrong_one(capsys):
    assert set(COMMANDS.values()) >= set(MODULES.values())
    with pytest.raises(SystemExit) as shown:
        magref(["clips", "--help"])
    assert shown.value.code == 0 and "--gpus" in capsys.readouterr().out
    assert magref(["nope"]) == 2
    assert capsys.readouterr().err.count("\n") == 1

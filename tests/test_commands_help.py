"""Every command the README shows answers ``--help``, in this one interpreter.

The commands are read from README.md (``python -m MODULE`` and ``python PATH.py``), so a
command added to the README is checked without touching this file, and a renamed script
or module the README still names fails here. Each entry point's ``main`` is imported and
called with ``["--help"]`` (scripts whose ``main()`` takes no arguments read ``sys.argv``);
argparse answers with ``SystemExit(0)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pipelines.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"python3?\s+(?:-m\s+([\w.]+)|([\w./]+\.py))")
NOT_OURS = {
    "pytest": "pytest's own command line",
    "pipelines/x.py": "a placeholder name in Known traps",
}


def readme_commands(text: str) -> list[str]:
    """``-m`` modules and script paths the README runs, in order of first mention."""
    found = []
    for module, path in COMMAND.findall(text):
        command = module or path
        if command not in NOT_OURS and command not in found:
            found.append(command)
    return found


COMMANDS = readme_commands((ROOT / "README.md").read_text())
# run_all runs these in-process: each must exist and parse, whether or not the README shows it.
COMMANDS += [f"pipelines/{stage.script}.py" for stage in STAGES if f"pipelines/{stage.script}.py" not in COMMANDS]


def entry_module(command: str) -> ModuleType:
    """The module whose ``main`` the command runs: ``-m pkg`` runs ``pkg.__main__``."""
    if command.endswith(".py"):
        path = ROOT / command
        assert path.is_file(), f"README runs {command}, which does not exist"
        name = command[:-3].replace("/", ".")
        if name.split(".")[0] in ("pipelines",):
            return importlib.import_module(name)
        spec = importlib.util.spec_from_file_location(f"readme_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    module = importlib.import_module(command)
    if hasattr(module, "__path__"):  # a package run with -m
        module = importlib.import_module(f"{command}.__main__")
    return module


def test_readme_names_the_commands():
    # The derivation itself: the stages, the tools and the model's commands are all found.
    for expected in ("pipelines/run_all.py", "pipelines/stage0_probe.py", "pipelines/stage4c_samples.py",
                     "pipelines.inspect_run", "model.train", "model.sample", "model.convert_release"):
        assert expected in COMMANDS
    assert readme_commands("run `python -m a.b --x` then python tools/c.py and python -m pytest") == ["a.b", "tools/c.py"]


@pytest.mark.parametrize("command", COMMANDS)
def test_command_answers_help(command, monkeypatch, capsys):
    main = getattr(entry_module(command), "main", None)
    assert callable(main), f"{command} has no main() to call"
    monkeypatch.setattr(sys, "argv", [command, "--help"])
    with pytest.raises(SystemExit) as exit_:
        main(["--help"]) if inspect.signature(main).parameters else main()
    assert exit_.value.code in (0, None), f"{command} --help exited {exit_.value.code}"
    assert "usage:" in capsys.readouterr().out

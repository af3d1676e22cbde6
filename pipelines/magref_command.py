"""``magref COMMAND ...``: every magref command under one installed name (``[project.scripts]``).

    magref clips --run-dir RUN --models tiny      # = python pipelines/stage1_clips.py --run-dir RUN ...
    magref train --manifest RUN/samples ...       # = python -m model.train ...

The scripts and ``python -m`` forms stay; this is the same ``main`` of each, with the same
flags (README, "One vocabulary"), after ``pip install -e .`` (``scripts/setup.sh``).
"""

from __future__ import annotations

import importlib
import sys

from pipelines.cli import cli

# command -> module whose main(argv) it runs (stage commands are named for what they write)
COMMANDS = {
    "run-all": "pipelines.run_all",
    "probe": "pipelines.stage0_probe",
    "clips": "pipelines.stage1_clips",
    "objects": "pipelines.stage2_objects",
    "faces": "pipelines.stage3_faces",
    "variants": "pipelines.stage4a_variants",
    "cross-pairs": "pipelines.stage4b_cross_pairs",
    "samples": "pipelines.stage4c_samples",
    "inspect": "pipelines.inspect_run",
    "compact": "pipelines.compact",
    "import-opens2v": "pipelines.import_opens2v",
    "export": "pipelines.export",
    "evaluate": "model.evaluate.__main__",
    "evaluate-videos": "pipelines.evaluate_videos",
    "cache-latents": "pipelines.cache_latents",
    "train-ray": "pipelines.train_ray",
    "train": "model.train.loop",
    "sample": "model.sample",
    "convert-release": "model.weights.release",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {module}" for name, module in COMMANDS.items())
    return f"usage: magref COMMAND [--help] ...\n\ncommands (each is its module's main):\n{rows}\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"magref: error: unknown command {name!r}; one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return cli(importlib.import_module(COMMANDS[name]).main, rest)


def entry() -> None:
    """The console script's target: exit with the command's code."""
    sys.exit(main())


if __name__ == "__main__":
    entry()

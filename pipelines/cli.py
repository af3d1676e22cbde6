"""Every command's command line: one-line user errors (exit 2), the stage flags, model sources.

A user's mistake (missing table, wrong path, bad key, a lock held by another job) raises
``UserError`` or one of ``USER_ERRORS``; ``cli`` prints it as one line and exits 2. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Callable

from curation.models import ROLES, ModelSourceError
from pipelines.config import ConfigError, key_help, load_config, to_yaml
from pipelines.run_lock import LockHeld
from pipelines.wiring import GPU_MODES
from schemas.command import Parser, UserError, run_command
from schemas.validate import SchemaError

PROGRESS_MODES = ("auto", "bar", "plain", "off")

# One commit (outputs, errors, ledger part) covers at most this many inputs or output megabytes:
# 100k clips then make ~800 parts per table instead of one per block (~25k), while a kill
# loses at most the commits in flight. See ``pipelines/ledger.py`` ``commit_grouped``.
PART_INPUTS = 128
PART_MB = 256.0

USER_ERRORS = (UserError, ConfigError, ModelSourceError, LockHeld, FileNotFoundError, SchemaError)


def cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a job's ``main`` as a command: user mistakes become one stderr line and exit 2.

    The one handler every entry point shares (``schemas/command.py``), with the pipelines'
    own user errors; anything else (a bug) keeps its traceback.
    """
    return run_command(main, argv, USER_ERRORS)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every Ray job shares (stages, ``run_all``, the cache job): cluster, GPUs, output."""
    parser.add_argument("--address", default=None,
                        help="Ray cluster address or 'auto'; default: RAY_ADDRESS if set, else an embedded Ray")
    parser.add_argument("--gpus", choices=GPU_MODES, default="auto",
                        help="model steps ask for their declared GPUs (STEP.pool.num_gpus): 'on' always (an "
                             "autoscaler starts GPU nodes), 'off' never (CPU), 'auto' when the cluster has GPUs "
                             "or can start GPU nodes (default)")
    parser.add_argument("--progress", choices=PROGRESS_MODES, default="auto",
                        help="'bar' (tqdm), 'plain' (a line every few seconds, for logs), 'off'; "
                             "'auto': a bar on a terminal, plain lines otherwise")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own INFO output (execution plans, Ray Data progress, worker logs)")
    parser.add_argument("--part-inputs", type=int, default=PART_INPUTS, metavar="N",
                        help=f"commit one part per table for at most N inputs (default {PART_INPUTS}); a kill "
                             "loses at most the uncommitted parts in flight, so smaller N resumes finer and "
                             "writes more files (python -m pipelines.compact merges them later)")
    parser.add_argument("--part-mb", type=float, default=PART_MB, metavar="M",
                        help=f"...or fewer inputs once their output rows reach M MB (default {PART_MB:g})")


def check_part_limits(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.part_inputs < 1:
        parser.error(f"--part-inputs must be >= 1, got {args.part_inputs}")
    if not args.part_mb > 0:
        parser.error(f"--part-mb must be > 0, got {args.part_mb:g}")


def config_epilog(config_cls: type) -> str:
    rows = key_help(config_cls)
    width = max((len(key) for key, _, _ in rows), default=0)
    lines = ["config keys (--set KEY=VALUE, or nested in a --config YAML; --print-config shows them all):"]
    for key, default, meaning in rows:
        shown = repr(default) if isinstance(default, str) and len(default) < 40 else (
            "<long text>" if isinstance(default, str) else json.dumps(default, default=str))
        lines.append(f"  {key:<{width}}  {shown:<12}  {meaning}")
    return "\n".join(lines)


def parse_args(stage: str, config_cls: type, description: str | None,
               argv: list[str] | None = None, input_help: str | None = None,
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
               models_flag: str = "--models") -> tuple[argparse.Namespace, Any]:
    """A stage's command line: the stage flags, a job's own (``add_arguments``) and the resolved
    config. ``models_flag``: ``--base`` for jobs whose one model is the backbone."""
    parser = Parser(prog=stage, description=description, epilog=config_epilog(config_cls),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--run-dir", help="run directory (local path or pyarrow filesystem URI); required")
    parser.add_argument("--input", help=input_help or "input table (default: the previous stage's table in RUN)")
    parser.add_argument("--config", help="YAML file with config keys (see --set)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set caption.pool.actors=4 (repeatable)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML (which --config reads back) and exit")
    add_run_arguments(parser)
    parser.add_argument("--step-of", help=argparse.SUPPRESS)  # "i/N" when run_all runs this stage
    if models_flag == "--base":
        parser.add_argument("--base", dest="models", action="append", default=[], metavar="SOURCE",
                            help="the backbone: 'tiny' (offline random), a diffusers dir or hub id")
    else:
        parser.add_argument("--models", action="append", default=[], metavar="SOURCE|ROLE=SOURCE",
                            help="'tiny' (offline random models), 'default' (hub ids), or ROLE=id/dir (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="process at most this many new inputs")
    args = parser.parse_args(argv)
    try:
        if args.config and not os.path.isfile(args.config):
            raise ConfigError(f"--config {args.config}: no such file")
        config = load_config(config_cls, args.config, args.set)
        args.models = parse_models(args.models)
    except (ConfigError, ModelSourceError, OSError) as err:
        parser.error(str(err))
    if args.print_config:
        print(to_yaml(config), end="")
        raise SystemExit(0)
    if not args.run_dir:
        parser.error("the following arguments are required: --run-dir")
    if args.limit is not None and args.limit < 0:
        parser.error(f"--limit must be >= 0, got {args.limit}")
    check_part_limits(parser, args)
    return args, config


def parse_models(values: list[str]) -> str | dict[str, str]:
    """``--models tiny`` -> "tiny"; ``--models captioner=dir --models tiny`` -> {role: source, "*": ...}.

    A role the registry does not know is an error naming the known ones.
    """
    roles: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            role, sep, source = item.partition("=")
            if sep:
                role = role.strip()
                if role not in ROLES:
                    raise ModelSourceError(f"--models {item}: unknown model role {role!r}; "
                                           f"known roles: {', '.join(sorted(ROLES))}")
                roles[role] = source.strip()
            elif item.strip():
                roles["*"] = item.strip()
    if not roles:
        return "default"
    if list(roles) == ["*"]:
        return roles["*"]
    return roles

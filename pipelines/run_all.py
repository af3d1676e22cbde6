"""Run every stage in order on one run directory, sharing one Ray.

    python pipelines/run_all.py --run-dir RUN --input VIDEOS [--models tiny] [--address auto]
    python pipelines/run_all.py --run-dir RUN --demo      # generated media, tiny models, offline

Stages: probe, clips, objects, faces, pairs (variants + backgrounds), cross_clip (identity
pairs), samples (the training records, Eq. 19). The run ends with its books and the
samples table at a glance.

Each stage is the same job as its own script (``pipelines/stageN_*.py``) and resumes
the same way, so rerunning ``run_all`` after a failure only does what is missing.
Per-stage settings: ``--stage-config clips=clips.yaml`` and ``--set clips.scenes.min_seconds=1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path

from curation import synthetic
from pipelines.cli import Parser, UserError, add_run_arguments, check_part_limits, cli
from pipelines.inspect_run import inspect, render, render_samples
from pipelines.ledger import RunDir
from pipelines.stages import STAGES
from pipelines.wiring import init_ray
from schemas.command import LOG, configure_logging

# --demo runs tiny random models on CPU (a --set of the user's comes later and wins):
# * the tiny captioner writes no "Subjects:" line, so stage 2 is told what the demo's
#   objects video shows, and keeps the small masks random SAM2 weights draw;
# * stage 4's generators at their real sizes and step counts would take minutes per clip
#   there, so the demo asks for small 2-step images; random SAM2 masks cover nearly whole
#   frames, so the demo inpaints however much is masked (real runs stop at 80 %).
DEMO_SETTINGS = ("objects.labels.extra=ball,box,person", "objects.filters.theta_min=0.001",
                 "pairs.variants.size=128", "pairs.variants.steps=2", "pairs.background.max_side=128",
                 "pairs.background.steps=2", "pairs.background.max_masked=1.0")


def make_demo_media(folder: Path) -> Path:
    """A small corpus with known answers: cuts, motion, stillness, a face, objects, and bad files."""
    if (folder / ".done").exists():
        return folder
    synthetic.cuts_video(folder / "three_scenes.mp4", cuts=[72, 144], num_frames=216)
    synthetic.moving_video(folder / "moving.mp4", seconds=3)
    synthetic.static_video(folder / "static.mp4", seconds=3)
    synthetic.face_video(folder / "astronaut.mp4", seconds=3)
    synthetic.objects_video(folder / "objects.mp4", seconds=3, height=144, width=256)  # a ball and a box
    synthetic.bad_corpus(folder / "bad")
    (folder / ".done").write_text("ok\n")
    return folder


def stage_key(module, stage: str, key: str) -> str:
    """``run_all``'s ``STAGE.STEP.KEY`` as the stage's own ``--set`` key.

    A stage whose config is one section named after the stage (stage 3's ``faces.*``) takes
    ``faces.pool.actors`` as is, so nobody types ``faces.faces.pool.actors``.
    """
    configs = [v for v in vars(module).values()
               if dataclasses.is_dataclass(v) and isinstance(v, type) and v.__module__ == module.__name__]
    names = [f.name for f in dataclasses.fields(configs[0])] if len(configs) == 1 else []
    if names == [stage] and not key.startswith(f"{stage}."):
        return f"{stage}.{key}"
    return key


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="run directory (local path or pyarrow filesystem URI)")
    parser.add_argument("--input", help="videos for stage 0 (folder, glob, list)")
    parser.add_argument("--demo", action="store_true", help="generate media into RUN/_media and use tiny models")
    parser.add_argument("--models", action="append", default=[], metavar="SOURCE|ROLE=SOURCE",
                        help="'tiny', 'default' (hub ids), or ROLE=id/dir (repeatable), for every stage")
    add_run_arguments(parser)
    parser.add_argument("--limit", type=int, default=None, help="process at most this many new inputs per stage")
    parser.add_argument("--stage-config", action="append", default=[], metavar="STAGE=FILE",
                        help="a stage's YAML config, e.g. clips=clips.yaml (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.STEP.KEY=VALUE",
                        help="one stage's config key, e.g. --set clips.caption.pool.actors=4, "
                             "--set faces.pool.actors=2 (repeatable)")
    parser.add_argument("--stages", help="comma-separated subset of stage names to run")
    args = parser.parse_args(argv)
    check_part_limits(parser, args)
    configure_logging(args.verbose)

    models = args.models or (["tiny"] if args.demo else [])
    if args.demo:
        args.set = [*DEMO_SETTINGS, *args.set]
    if args.demo and not args.input:
        args.input = str(make_demo_media(Path(RunDir.of(args.run_dir).root.path) / "_media"))
    if not args.input:
        raise UserError("--input is required (a folder, glob or list of videos), or --demo")
    bad = [item for item in args.stage_config if "=" not in item]
    if bad:
        raise UserError(f"--stage-config {bad[0]}: expected STAGE=FILE, e.g. clips=clips.yaml")
    configs = dict(item.split("=", 1) for item in args.stage_config)
    wanted = set(args.stages.split(",")) if args.stages else None
    known = {stage.name for stage in STAGES}
    unknown = sorted((wanted or set()) - known) + sorted(set(configs) - known)
    unknown += [item for item in args.set if item.split(".", 1)[0] not in known or "." not in item.split("=", 1)[0]]
    if unknown:
        raise UserError(f"unknown stage in {unknown[0]!r}: --stages, --stage-config and --set name one of "
                        f"{', '.join(s.name for s in STAGES)} (e.g. --set clips.scenes.min_seconds=1)")

    owns_ray = init_ray(args.address, args.verbose)
    todo = [stage for stage in STAGES if not wanted or stage.name in wanted]
    try:
        for i, stage in enumerate(todo, 1):
            stage_argv = ["--run-dir", args.run_dir, "--step-of", f"{i}/{len(todo)}", "--gpus", args.gpus,
                          "--progress", args.progress, *(["--verbose"] if args.verbose else []),
                          "--part-inputs", str(args.part_inputs), "--part-mb", str(args.part_mb)]
            if stage.input_table is None:
                stage_argv += ["--input", args.input]
            if args.address:
                stage_argv += ["--address", args.address]
            for model in models:
                stage_argv += ["--models", model]
            if args.limit is not None:
                stage_argv += ["--limit", str(args.limit)]
            if stage.name in configs:
                stage_argv += ["--config", configs[stage.name]]
            module = importlib.import_module(f"pipelines.{stage.script}")
            for item in args.set:
                prefix = f"{stage.name}."
                if item.startswith(prefix):
                    stage_argv += ["--set", stage_key(module, stage.name, item[len(prefix):])]
            LOG.info(f"stage {i} of {len(todo)}: {stage.name}")
            code = module.main(stage_argv)
            if code:
                LOG.error(f"stage {stage.name} failed with exit code {code}; later stages not run")
                return code
    finally:
        if owns_ray:
            import ray

            ray.shutdown()
    books = inspect(RunDir.of(args.run_dir))
    print(render(books))
    print(render_samples(RunDir.of(args.run_dir)))  # what the run is for: the training records
    return 0 if books["ok"] else 1


if __name__ == "__main__":
    sys.exit(cli(main))

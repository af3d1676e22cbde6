"""Seconds per video of each evaluation metric family, decode excluded.

    python benchmarks/evaluate_metrics.py [--models tiny] [--faces dlib] [--videos 3] [--frames 33]
        [--size 240x416] [--sampled 8] [--device cpu]

Generates ``--videos`` moving videos with the astronaut's face and a labelled object, then
runs every metric through ``Evaluator.evaluate`` and prints, per family, the mean seconds
per video (the first video is a warm-up and not counted when there are several). With
``--models tiny`` the numbers are the tiny configs' (this machine, offline); on a GPU with
real checkpoints give ``--models ROLE=DIR`` per role; ``--ir101-random`` times FaceSim-Cur on
a real-size IR-101 with random weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.faces.synthetic import astronaut, posed_frames  # noqa: E402
from curation.synthetic import write_video  # noqa: E402
from model.evaluate.curricularface import CurricularFaceBackbone  # noqa: E402
from model.evaluate.entries import BACKGROUND, FACE, OBJECT, Entry, Reference  # noqa: E402
from model.evaluate.scorer import METRICS, EvaluateConfig, Evaluator  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny")
    p.add_argument("--faces", default="dlib")
    p.add_argument("--videos", type=int, default=3)
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--size", default="240x416", help="HxW")
    p.add_argument("--sampled", type=int, default=8, help="frames sampled per video for the model metrics")
    p.add_argument("--metrics", default=",".join(METRICS))
    p.add_argument("--ir101-random", action="store_true",
                   help="facesim_cur on a real-size IR-101 with random weights (saved to a temporary folder)")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))
    config = EvaluateConfig(metrics=args.metrics.split(","), frames=args.sampled, faces=args.faces)
    models = args.models
    keep = tempfile.TemporaryDirectory()
    if args.ir101_random:
        folder = CurricularFaceBackbone().eval().save_pretrained(Path(keep.name) / "ir101")
        models = {"*": args.models, "curricularface": str(folder)}
    started = time.perf_counter()
    evaluator = Evaluator(config, models, args.device)
    print(f"models loaded in {time.perf_counter() - started:.1f}s", flush=True)
    photo = astronaut()
    cx, cy = (int(v) for v in photo.face_centre)
    face = photo.image[max(cy - 90, 0):cy + 90, max(cx - 90, 0):cx + 90]
    rng = np.random.default_rng(0)
    thing = rng.integers(0, 255, (48, 48, 3)).astype(np.uint8)
    background = np.full((height, width, 3), (90, 140, 90), np.uint8)
    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.videos):
            frames = [f.copy() for f in posed_frames(photo, args.frames, (width, height))]
            for k, f in enumerate(frames):
                f[10:58, 10 + 2 * k:58 + 2 * k] = thing
            path = Path(tmp) / f"v{i}.mp4"
            write_video(path, frames)
            entry = Entry(f"v{i}", "an astronaut smiles beside a box", path,
                          [Reference(face, "astronaut", FACE), Reference(thing, "box", OBJECT),
                           Reference(background, None, BACKGROUND)])
            rows = evaluator.evaluate(entry)
            if i == 0 and args.videos > 1:
                continue  # warm-up
            family_seconds = {}
            for metric in evaluator.metrics:
                first = next(r for r in rows if r["metric"] == metric.outputs[0])
                family_seconds[metric.name] = first["seconds"]
            for name, value in family_seconds.items():
                seconds.setdefault(name, []).append(value)
    print(f"{'metric':<14} s/video ({args.models}, {args.size}, {args.frames} frames, {args.sampled} sampled)")
    for name, values in seconds.items():
        print(f"{name:<14} {np.mean(values):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

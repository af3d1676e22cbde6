"""Shot-boundary quality on camera-like edited media whose transitions are known.

    python benchmarks/shot_boundaries.py [--videos 6 --height 216 --width 384] [--same-place]
        [--transnet] [--device cuda]

Each video joins camera-like shots (``curation.synthetic.camera_video``: a panning, zooming
camera over a textured world, a moving object, film grain, x264 veryfast) with every
transition kind twice (hard cut, dissolve, fade through black, fade through white, 0.5-1.5 s)
and fades in from / out to black at its ends. ``--same-place`` gives every shot of a video
the same colours and light (angles of one location), the hard case for colour-based detectors.

Rows: PySceneDetect's own ``detect()`` with each detector at its defaults (its decode, its
auto-downscale), the same detectors on our ~96 px scan frames, our ``gradual`` detector, the
classical ensembles, and TransNetV2 (``--transnet``). Per transition kind: found/total (a
reported cut point or range within 2 frames of the transition); ``false``: reported
boundaries that match none. For the streams that give frame ranges (what stage 1 uses):
``overlaps``: kept clips holding more than 2 frames of a transition (or frames of both sides
of a cut), ``lost``: shots longer than ``min_seconds`` with no kept clip. ``x decode``: the
scan's time over a plain decode of the same videos, measured alternately in this process.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from curation import synthetic  # noqa: E402
from curation.decode import decode_all  # noqa: E402

KINDS = (*synthetic.TRANSITION_KINDS, *synthetic.EDGE_KINDS)
SLACK = 2


def make_media(folder: Path, count: int, height: int, width: int, same_place: bool,
               seed: int = 100) -> list[synthetic.EditedVideo]:
    made = []
    for i in range(seed, seed + count):
        name = f"edited_{'same' if same_place else 'mixed'}_{height}_{i:03d}.mp4"
        truth = folder / (name + ".truth.pkl")
        if truth.exists():
            made.append(pickle.loads(truth.read_bytes()))
            made[-1].path = folder / name  # the media folder may have moved
            continue
        kinds = list(np.random.default_rng(i).permutation(list(synthetic.TRANSITION_KINDS) * 2))
        video = synthetic.camera_video(folder / name, kinds, height=height, width=width, seed=i, edges=True,
                                       same_place=same_place)
        truth.write_bytes(pickle.dumps(video))
        made.append(video)
        print(f"  generated {name}", flush=True)
    return made


def matches(start: int, end: int, t: synthetic.Transition) -> bool:
    return start - SLACK <= t.end and t.start <= end + SLACK


def score(found: list[tuple[int, int]], video: synthetic.EditedVideo) -> tuple[dict[str, list[int]], int]:
    """Per kind [found, total], and how many reported boundaries match no transition."""
    per = {kind: [0, 0] for kind in KINDS}
    for t in video.transitions:
        per[t.kind][1] += 1
        per[t.kind][0] += any(matches(s, e, t) for s, e in found)
    false = sum(not any(matches(s, e, t) for t in video.transitions) for s, e in found)
    return per, false


def clip_faults(clips, video: synthetic.EditedVideo, min_seconds: float) -> tuple[int, int]:
    kept = [(c.start, c.end) for c in clips if c.status == "kept"]
    overlaps = 0
    for t in video.transitions:
        for a, b in kept:
            if t.start == t.end:
                overlaps += a < t.end < b and min(t.end - a, b - t.end) > SLACK
            else:
                overlaps += min(b, t.end) - max(a, t.start) > SLACK
    lost = sum(not any(s - SLACK <= a and b <= e + SLACK for a, b in kept)
               for s, e in video.shots if e - s > min_seconds * video.fps)
    return overlaps, lost


class Row:
    def __init__(self, name: str):
        self.name, self.per, self.false, self.overlaps, self.lost = name, {k: [0, 0] for k in KINDS}, 0, None, None
        self.seconds, self.plain, self.frames = [], [], 0

    def add(self, per, false, faults=None) -> None:
        for kind, (hit, total) in per.items():
            self.per[kind][0] += hit
            self.per[kind][1] += total
        self.false += false
        if faults is not None:
            self.overlaps = (self.overlaps or 0) + faults[0]
            self.lost = (self.lost or 0) + faults[1]

    def line(self) -> str:
        kinds = " ".join(f"{self.per[k][0]:>2}/{self.per[k][1]:<2}" for k in KINDS)
        extra = f"{self.overlaps:>8} {self.lost:>5}" if self.overlaps is not None else f"{'-':>8} {'-':>5}"
        ratio = f"{sum(self.seconds) / sum(self.plain):7.2f}" if self.plain else f"{'-':>7}"
        return f"{self.name:<38} {kinds} {self.false:>6} {extra} {ratio}"


def header() -> str:
    kinds = " ".join(f"{k[:5]:>5}" for k in KINDS)
    return f"{'detector':<38} {kinds} {'false':>6} {'overlaps':>8} {'lost':>5} {'x decode':>7}"


def pyscenedetect_default(name: str):
    import scenedetect as sd

    return {"adaptive": sd.AdaptiveDetector, "content": sd.ContentDetector, "threshold": sd.ThresholdDetector,
            "hash": sd.HashDetector, "histogram": sd.HistogramDetector}[name]()


def run_default(row: Row, name: str, media) -> None:
    """PySceneDetect's ``detect()`` as a user would call it: its decode, its defaults."""
    from scenedetect import detect

    for video in media:
        plain = timed(decode_all, str(video.path))
        seconds, scenes = timed_value(detect, str(video.path), pyscenedetect_default(name))
        cuts = [scene[0].frame_num for scene in scenes[1:]]
        row.add(*score([(c, c) for c in cuts], video))
        row.seconds.append(seconds)
        row.plain.append(plain)


def run_raw(row: Row, name: str, media, detect_width: int) -> None:
    """One PySceneDetect detector (our thresholds) on the scan's small frames: cut points only."""
    from scenedetect.common import FrameTimecode

    from curation.clips.scan import SmallBGR
    from curation.clips.scenes import ScenesConfig
    from curation.decode import open_video

    for video in media:
        detector = ScenesConfig(classical=[name]).detection(video.fps).pyscenedetect()[0]
        cuts = []
        with open_video(str(video.path), strict=False) as (container, stream):
            shrink = SmallBGR.for_stream(stream, detect_width)
            n = -1
            for n, frame in enumerate(container.decode(stream)):
                cuts += [c.frame_num for c in detector.process_frame(FrameTimecode(n, fps=float(video.fps)),
                                                                     shrink(frame))]
            cuts += [c.frame_num for c in detector.post_process(FrameTimecode(n, fps=float(video.fps)))]
        row.add(*score([(c, c) for c in cuts], video))


def run_stream(row: Row, config, media, shot_model=None) -> None:
    """Stage 1's scan (boundaries and the clip policy, no scoring), timed beside a plain decode."""
    from curation.clips.scan import scan_video

    for video in media:
        plain = timed(decode_all, str(video.path))
        seconds, scan = timed_value(scan_video, str(video.path), config, None, None, shot_model)
        row.add(*score([(b.start, b.end) for b in scan.boundaries], video),
                clip_faults(scan.clips, video, config.min_seconds))
        row.seconds.append(seconds)
        row.plain.append(plain)
        row.frames += scan.num_frames


def timed(fn, *args) -> float:
    return timed_value(fn, *args)[0]


def timed_value(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--height", type=int, default=216)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--same-place", action="store_true", help="every shot of a video in the same colours")
    parser.add_argument("--seed", type=int, default=100, help="first video's seed (defaults were tuned on 100-105)")
    parser.add_argument("--transnet", action="store_true", help="also TransNetV2 (slow on CPU: ~90 frames/s)")
    parser.add_argument("--device", default="cpu", help="TransNetV2's device")
    parser.add_argument("--media", default=os.path.join(tempfile.gettempdir(), "magref-bench-shots"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a scenes.* key for the stream rows, e.g. --set gradual_threshold=0.2 (repeatable)")
    parser.add_argument("--streams-only", action="store_true", help="skip the PySceneDetect cut-point rows")
    parser.add_argument("--ensembles", default="adaptive;hash;gradual;adaptive,gradual;hash,gradual;"
                        "histogram,gradual;adaptive,hash,gradual", help="classical ensembles to run, ';'-separated")
    args = parser.parse_args()

    from dataclasses import replace

    import yaml

    from curation.clips.scenes import ScenesConfig

    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    config = replace(ScenesConfig(), **overrides)

    folder = Path(args.media)
    folder.mkdir(parents=True, exist_ok=True)
    media = make_media(folder, args.videos, args.height, args.width, args.same_place, args.seed)
    kinds = sum(len(v.transitions) for v in media)
    print(f"{len(media)} videos, {sum(v.num_frames for v in media)} frames, {kinds} transitions "
          f"({'same place' if args.same_place else 'mixed looks'}), {args.width}x{args.height}\n")
    if overrides:
        print("stream settings:", ", ".join(f"{k}={v}" for k, v in overrides.items()))
    print(header())
    if not args.streams_only:
        for name in ("adaptive", "content", "threshold", "hash", "histogram"):
            row = Row(f"PySceneDetect detect() {name}, defaults")
            run_default(row, name, media)
            print(row.line(), flush=True)
        for name in ("adaptive", "content", "hash", "histogram"):
            row = Row(f"{name} on {config.detect_width} px scan frames")
            run_raw(row, name, media, config.detect_width)
            print(row.line(), flush=True)
    for names in (item.split(",") for item in args.ensembles.split(";") if item):
        row = Row("stream: " + "+".join(names) + (" (default)" if names == ScenesConfig().classical else ""))
        run_stream(row, replace(config, detector="classical", classical=names), media)
        print(row.line(), flush=True)
    if args.transnet:
        from curation.models import load

        model = load("shot_boundaries", "default", device=args.device)
        row = Row(f"stream: transnetv2 ({args.device})")
        run_stream(row, replace(config, detector="transnetv2"), media, model)
        print(row.line(), flush=True)
        print(f"TransNetV2 scan: {row.frames / sum(row.seconds):.0f} frames/s on {args.device} "
              f"(plain decode {row.frames / sum(row.plain):.0f} frames/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stage 1 throughput against a plain decode of the same videos, measured in one run.

    python benchmarks/stage1.py [--videos 20 --seconds 30 --height 720 --width 1280]
    python benchmarks/stage1.py --camera-like [--detector transnetv2 --device cuda]
    python benchmarks/stage1.py --captions real-arch --device cuda   # GPU caption throughput

Media: generated videos with a shot change every ~7 s. Default: the project's ultrafast
synthetic media with hard cuts (decodes ~2-3x faster than real video, so the ratio is
pessimistic). ``--camera-like``: camera-like shots (``curation.synthetic.camera_video``:
panning, zooming, a moving object, film grain, x264 veryfast, so decoding costs what camera
footage costs) joined by every transition kind in turn (cut, dissolve, fade through black,
fade through white, 0.5-1.5 s); the run then also prints how many transitions the scan
found and whether any kept clip holds transition frames.

Prints:

* ``ops``: ClipSplitter + ClipScorer (scenes, motion, aesthetic, no captions) run in this
  process, video by video, over plain threaded PyAV decode of every frame. This is the
  per-video cost that decides throughput at scale. Target <= 1.5. The two are timed
  alternately ``--repeats`` times (other processes' load hits both alike); medians.
* ``job``: the whole Ray Data job (``caption.enabled=false``) on a fresh run dir, Ray
  already started, over the same plain decode: adds actor start-up (model loads) and
  scheduling, a fixed cost that matters for small inputs only. With ``--detector
  transnetv2`` on a machine with GPUs the splitter runs on GPU actors
  (``scenes.transnet_pool``), which is how to measure TransNetV2 on a GPU actor.

``--detector``: ``classical`` (the CPU default), ``transnetv2`` (``--device`` picks its
device for ``ops``). The aesthetic model is the ``tiny`` one on CPU (CLIP ViT-L/14 wants a
GPU; on one it scores 3 frames per clip in milliseconds). ``--captions tiny|real-arch``
also times captioning of the kept clips: ``real-arch`` builds Qwen2.5-VL-7B's architecture
with random weights in bf16 (no download), which measures generation cost, not quality.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyarrow as pa  # noqa: E402

from curation import synthetic  # noqa: E402
from curation.decode import decode_all  # noqa: E402


def make_media(folder: Path, count: int, seconds: float, height: int, width: int,
               camera: bool) -> tuple[list[Path], list[synthetic.EditedVideo | None]]:
    """``camera``: edited camera-like footage with every transition kind (truth kept beside
    each file); otherwise the project's ultrafast synthetic media with hard cuts."""
    kind = "camera" if camera else "synthetic"
    folder = folder / kind
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f".done-{kind}-{count}-{seconds}-{height}x{width}"
    paths = [folder / f"{kind}_{i:03d}.mp4" for i in range(count)]
    truths = [folder / f"{kind}_{i:03d}.truth.pkl" for i in range(count)]
    if marker.exists():
        return paths, [pickle.loads(t.read_bytes()) if t.exists() else None for t in truths]
    frames = int(seconds * synthetic.FPS)
    made: list[synthetic.EditedVideo | None] = []
    for i, path in enumerate(paths):
        if camera:
            joins = max(1, int(seconds // 7))
            kinds = [synthetic.TRANSITION_KINDS[(i + j) % len(synthetic.TRANSITION_KINDS)] for j in range(joins)]
            video = synthetic.camera_video(path, kinds, height=height, width=width, seed=i,
                                           shot_seconds=(5.0, 8.0))
            truths[i].write_bytes(pickle.dumps(video))
            made.append(video)
        else:
            cuts = list(range(160 + 7 * i, frames - 48, 170))  # a cut every ~7 s, shifted per video
            synthetic.write_video(path, synthetic.scene_frames(frames, cuts, height=height, width=width, seed=i))
            made.append(None)
        print(f"  generated {path.name}", flush=True)
    marker.write_text("ok\n")
    return paths, made


def time_rounds(paths: list[Path], videos: pa.Table, splitter, scorer, repeats: int):
    """Per video, a plain decode then stage 1 on it, ``repeats`` times: the two share whatever
    load other processes put on the machine at that moment. Returns per-round totals of both,
    every per-video ratio, the frame count and the last round's clips."""
    plain, ops, ratios = [], [], []
    for _ in range(repeats):
        splitter.scans = []
        rounds = [0.0, 0.0]
        outs = []
        total = 0  # frames; every round decodes the same videos
        for i, path in enumerate(paths):
            start = time.perf_counter()
            total += decode_all(str(path))
            middle = time.perf_counter()
            outs.append(scorer(splitter(videos.slice(i, 1))))
            end = time.perf_counter()
            rounds[0] += middle - start
            rounds[1] += end - middle
            ratios.append((end - middle) / (middle - start))
        plain.append(rounds[0])
        ops.append(rounds[1])
    return plain, ops, ratios, total, pa.concat_tables(outs, promote_options="permissive")


def recording_splitter(*args, **kwargs):
    """The ClipSplitter operator, keeping each video's scan (its boundaries) for the quality line."""
    from curation.clips.splitter import ClipSplitter

    class Recording(ClipSplitter):
        def scan(self, video):
            found = super().scan(video)
            self.scans.append(found)
            return found

    splitter = Recording(*args, **kwargs)
    splitter.scans = []
    return splitter


def transitions_found(scans, truths, min_seconds: float) -> str:
    """Per kind found/total, false boundaries, and faults of kept clips (see shot_boundaries.py)."""
    from benchmarks.shot_boundaries import KINDS, Row, clip_faults, score

    row = Row("scan")
    for scan, truth in zip(scans, truths):
        row.add(*score([(b.start, b.end) for b in scan.boundaries], truth), clip_faults(scan.clips, truth, min_seconds))
    kinds = ", ".join(f"{k} {row.per[k][0]}/{row.per[k][1]}" for k in KINDS if row.per[k][1])
    return (f"transitions found: {kinds}; false {row.false}; kept clips holding transition frames "
            f"{row.overlaps}; shots with no clip {row.lost}")


def time_job(media: Path, work: Path, detector: str) -> float:
    from pipelines.stage0_probe import main as probe
    from pipelines.stage1_clips import main as clips
    from pipelines.wiring import init_ray

    run = work / f"run-{time.time_ns()}"
    init_ray(None)
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    probe(["--input", str(media), "--run-dir", str(run)])
    start = time.perf_counter()
    clips(["--run-dir", str(run), "--models", "tiny", "--set", "caption.enabled=false",
           "--set", f"scenes.detector={detector}"])
    return time.perf_counter() - start


def real_arch_captioner(device: str):
    """Qwen2.5-VL-7B-Instruct's architecture (config.json numbers), random bf16 weights."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from curation.clips.caption import SPECIAL_TOKENS, CaptionModel, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
                         rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24],
                                          "rope_theta": 1000000.0}),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           fullatt_block_indexes=[7, 15, 23, 31], window_size=112, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = None  # random weights: generate exactly max_new_tokens
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return CaptionModel(model, tokenizer, device, torch.bfloat16)


def time_captions(kind: str, device: str, kept: pa.Table, batch: int, tokens: int) -> None:
    """The CPU frames step, then the captioner in ``batch``-clip generate calls (as the job runs them)."""
    from curation.clips.caption import CaptionConfig, Captioner, frame_request
    from curation.frames import FrameReader
    from schemas.tables import CLIPS

    model = real_arch_captioner(device) if kind == "real-arch" else None
    config = CaptionConfig(max_new_tokens=tokens)
    captioner = Captioner(config, models="tiny", device=device, model=model)
    kept = kept.append_column("_input", kept.column("clip_id")) if "_input" not in kept.column_names else kept
    start = time.perf_counter()
    decoded = FrameReader(frame_request(config), schema=CLIPS)(kept)
    decoding = time.perf_counter() - start
    start = time.perf_counter()
    outs = [captioner(decoded.slice(i, batch)) for i in range(0, decoded.num_rows, batch)]
    seconds = time.perf_counter() - start
    rows = sum(out.num_rows for out in outs)
    print(f"caption frames (CPU step): {rows} clips in {decoding:.1f} s = {rows / max(decoding, 1e-9):.1f} clips/s")
    print(f"captions ({kind}, {device}, batch {batch}, {tokens} new tokens): {rows} clips in "
          f"{seconds:.1f} s = {rows / seconds:.2f} clips/s, {captioner.generate_calls} generate calls")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=3, help="alternating plain/ops rounds; medians reported")
    parser.add_argument("--media", default=os.path.join(tempfile.gettempdir(), "magref-bench-stage1"))
    parser.add_argument("--no-job", action="store_true", help="skip the Ray job timing")
    parser.add_argument("--camera-like", action="store_true",
                        help="edited camera-like footage with every transition kind (x264 veryfast, film grain)")
    parser.add_argument("--detector", choices=["classical", "transnetv2"], default="classical",
                        help="shot boundaries: the CPU default (classical) or TransNetV2")
    parser.add_argument("--captions", choices=["none", "tiny", "real-arch"], default="none")
    parser.add_argument("--device", default="cpu", help="device of TransNetV2 (ops) and the captioner")
    parser.add_argument("--caption-batch", type=int, default=8)
    parser.add_argument("--caption-tokens", type=int, default=128)
    args = parser.parse_args()

    from curation.clips.quality import ClipScorer, QualityConfig
    from curation.clips.scenes import ScenesConfig
    from curation.video import probe_video

    media = Path(args.media)
    media.mkdir(parents=True, exist_ok=True)
    print(f"media: {args.videos} x {args.seconds:.0f} s at {args.width}x{args.height} in {media}", flush=True)
    paths, truths = make_media(media, args.videos, args.seconds, args.height, args.width, args.camera_like)
    videos = pa.Table.from_pylist([probe_video(str(p)) for p in paths])
    scenes = ScenesConfig(detector=args.detector)
    splitter = recording_splitter(scenes, QualityConfig(), models="default", device=args.device)
    scorer = ClipScorer(QualityConfig(), models="tiny")

    plain, ops, ratios, frames, clips = time_rounds(paths, videos, splitter, scorer, args.repeats)
    base, mine = statistics.median(plain), statistics.median(ops)
    kept = clips.filter(pa.compute.equal(clips.column("status"), "kept"))
    counts = dict(zip(*[x.to_pylist() for x in clips.column("status").value_counts().flatten()]))
    print(f"plain decode: {frames} frames in {base:.2f} s ({frames / base:.0f} fps)  rounds {[round(x, 2) for x in plain]}")
    print(f"stage 1 ops (no captions, detector {args.detector} on {args.device}): {mine:.2f} s "
          f"({frames / mine:.0f} fps)  rounds {[round(x, 2) for x in ops]}  clips {counts}")
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    print(f"RATIO ops / plain decode = {statistics.median(ratios):.2f} (median of {len(ratios)} per-video "
          f"ratios, quartiles {quartiles[0]:.2f}-{quartiles[2]:.2f}; of the round medians {mine / base:.2f}; "
          f"target <= 1.5); {clips.num_rows / mine:.1f} candidate clips/s, {kept.num_rows / mine:.1f} kept clips/s")
    if all(t is not None for t in truths):
        print(transitions_found(splitter.scans, truths, scenes.min_seconds))
    if not args.no_job:
        job = time_job(paths[0].parent, Path(tempfile.mkdtemp(prefix="bench-stage1-")), args.detector)
        print(f"RATIO job / plain decode = {job / base:.2f} (job {job:.2f} s incl. actor start-up; "
              f"{clips.num_rows / job:.1f} clips/s)")
    if args.captions != "none":
        time_captions(args.captions, args.device, kept, args.caption_batch, args.caption_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())

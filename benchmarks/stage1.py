"""Stage 1 throughput against a plain decode of the same videos, measured in one run.

    python benchmarks/stage1.py [--videos 20 --seconds 30 --height 720 --width 1280]
    python benchmarks/stage1.py --captions real-arch --device cuda   # GPU caption throughput

Prints, for generated videos with a cut every ~7 s:

* ``ops``: ClipSplitter + ClipScorer (scenes, motion, aesthetic, no captions) run in
  this process, video by video, over plain threaded PyAV decode of every frame. This is
  the per-video cost that decides throughput at scale. Target <= 1.5.
* ``job``: the whole Ray Data job (``caption.enabled=false``) on a fresh run dir, Ray
  already started, over the same plain decode: adds actor start-up (model loads) and
  scheduling, a fixed cost that matters for small inputs only.

The aesthetic model is the ``tiny`` one on CPU (CLIP ViT-L/14 wants a GPU; on one it
scores 3 frames per clip in milliseconds). ``--captions tiny|real-arch`` also times
captioning of the kept clips: ``real-arch`` builds Qwen2.5-VL-7B's architecture with
random weights in bf16 (no download), which measures generation cost, not quality.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from curation import synthetic  # noqa: E402
from curation.decode import decode_all  # noqa: E402


def make_media(folder: Path, count: int, seconds: float, height: int, width: int, camera: bool) -> list[Path]:
    """``camera``: x264 preset veryfast (CABAC, deblocking, B-frames) over frames with film grain, so
    decoding costs what camera footage costs; otherwise the project's ultrafast synthetic media,
    which decodes ~2-3x faster than real video and so makes the ratio pessimistic."""
    kind = "camera" if camera else "synthetic"
    folder = folder / kind
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f".done-{kind}-{count}-{seconds}-{height}x{width}"
    paths = [folder / f"{kind}_{i:03d}.mp4" for i in range(count)]
    if marker.exists():
        return paths
    frames = int(seconds * synthetic.FPS)
    for i, path in enumerate(paths):
        cuts = list(range(160 + 7 * i, frames - 48, 170))  # a cut every ~7 s, shifted per video
        images = synthetic.scene_frames(frames, cuts, height=height, width=width, seed=i)
        if camera:
            write_camera_like(path, images, np.random.default_rng(i))
        else:
            synthetic.write_video(path, images)
        print(f"  generated {path.name}", flush=True)
    marker.write_text("ok\n")
    return paths


def write_camera_like(path: Path, frames, rng) -> None:
    import av

    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=synthetic.FPS)
                stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
                stream.options = {"preset": "veryfast", "crf": "20"}
            grain = rng.normal(0, 4, frame.shape[:2])[..., None]
            noisy = np.clip(frame + grain, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(noisy, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def time_plain(paths: list[Path]) -> tuple[float, int]:
    start = time.perf_counter()
    frames = sum(decode_all(str(p)) for p in paths)
    return time.perf_counter() - start, frames


def time_ops(paths, videos, splitter, scorer) -> tuple[float, pa.Table]:
    start = time.perf_counter()
    outs = [scorer(splitter(videos.slice(i, 1))) for i in range(videos.num_rows)]
    return time.perf_counter() - start, pa.concat_tables(outs, promote_options="permissive")


def time_job(media: Path, work: Path) -> float:
    from pipelines.common import init_ray
    from pipelines.stage0_probe import main as probe
    from pipelines.stage1_clips import main as clips

    run = work / f"run-{time.time_ns()}"
    init_ray(None)
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    probe(["--input", str(media), "--run-dir", str(run)])
    start = time.perf_counter()
    clips(["--run-dir", str(run), "--models", "tiny", "--set", "caption.enabled=false"])
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
    from curation.clips.caption import CaptionConfig, Captioner

    model = real_arch_captioner(device) if kind == "real-arch" else None
    captioner = Captioner(CaptionConfig(batch_size=batch, max_new_tokens=tokens), models="tiny", device=device,
                          model=model)
    start = time.perf_counter()
    out = captioner(kept)
    seconds = time.perf_counter() - start
    print(f"captions ({kind}, {device}, batch {batch}, {tokens} new tokens): {out.num_rows} clips in "
          f"{seconds:.1f} s = {out.num_rows / seconds:.2f} clips/s, {captioner.generate_calls} generate calls")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=2, help="alternating plain/ops rounds; medians reported")
    parser.add_argument("--media", default=os.path.join(tempfile.gettempdir(), "magref-bench-stage1"))
    parser.add_argument("--no-job", action="store_true", help="skip the Ray job timing")
    parser.add_argument("--camera-like", action="store_true",
                        help="encode with x264 preset veryfast + film grain (decode cost of real footage)")
    parser.add_argument("--captions", choices=["none", "tiny", "real-arch"], default="none")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--caption-batch", type=int, default=8)
    parser.add_argument("--caption-tokens", type=int, default=128)
    args = parser.parse_args()

    from curation.clips.quality import ClipScorer, QualityConfig
    from curation.clips.scenes import ClipSplitter, ScenesConfig
    from curation.video import probe_video

    media = Path(args.media)
    media.mkdir(parents=True, exist_ok=True)
    print(f"media: {args.videos} x {args.seconds:.0f} s at {args.width}x{args.height} in {media}", flush=True)
    paths = make_media(media, args.videos, args.seconds, args.height, args.width, args.camera_like)
    videos = pa.Table.from_pylist([probe_video(str(p)) for p in paths])
    splitter, scorer = ClipSplitter(ScenesConfig(), QualityConfig()), ClipScorer(QualityConfig(), models="tiny")

    plain, ops = [], []
    for _ in range(args.repeats):  # alternate, so load from other processes hits both alike
        seconds, frames = time_plain(paths)
        plain.append(seconds)
        seconds, clips = time_ops(paths, videos, splitter, scorer)
        ops.append(seconds)
    base, mine = statistics.median(plain), statistics.median(ops)
    kept = clips.filter(pa.compute.equal(clips.column("status"), "kept"))
    counts = dict(zip(*[x.to_pylist() for x in clips.column("status").value_counts().flatten()]))
    print(f"plain decode: {frames} frames in {base:.2f} s ({frames / base:.0f} fps)  rounds {[round(x, 2) for x in plain]}")
    print(f"stage 1 ops (no captions): {mine:.2f} s  rounds {[round(x, 2) for x in ops]}  clips {counts}")
    print(f"RATIO ops / plain decode = {mine / base:.2f} (target <= 1.5); "
          f"{clips.num_rows / mine:.1f} candidate clips/s, {kept.num_rows / mine:.1f} kept clips/s")
    if not args.no_job:
        job = time_job(paths[0].parent, Path(tempfile.mkdtemp(prefix="bench-stage1-")))
        print(f"RATIO job / plain decode = {job / base:.2f} (job {job:.2f} s incl. actor start-up; "
              f"{clips.num_rows / job:.1f} clips/s)")
    if args.captions != "none":
        time_captions(args.captions, args.device, kept, args.caption_batch, args.caption_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())

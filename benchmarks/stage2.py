"""Stage 2 throughput per step, in one process: keyframes, GroundingDINO, SAM2, references.

    python benchmarks/stage2.py [--clips 16 --height 360 --width 640]          # tiny models, CPU
    python benchmarks/stage2.py --device cuda --real-arch --height 720 --width 1280

Each step runs on the output of the step before, ``--batch`` clips per call (the pools'
``batch_size``), after one warm-up batch; the figures are the steps' own times, no Ray:

* ``frames``: ``FrameReader`` decoding the keyframes (CPU, PyAV);
* ``grounding``: ``Grounder`` (GroundingDINO, all labels + "human face" in one query);
* ``segment``: ``Segmenter`` (SAM2: image encoder once per keyframe, decoder over all boxes);
* ``references``: ``ObjectReferences`` (morphology, filters, PNG mask + RGBA cut-out; CPU).

Throughput is given as clips/s and objects/s (object candidates = non-face boxes, each of
which becomes an ``objects`` row). ``--real-arch`` builds the real architectures with
random weights (no download): GroundingDINO-base (Swin-B + BERT-base, 800x1333 input)
and SAM2.1-hiera-large (1024 px), bf16 on CUDA. Random weights give arbitrary boxes, so
the object counts are whatever the thresholds let through (capped by
``grounding.max_instances`` per label); the cost per object is what the figure measures.
On CUDA the peak GPU memory of each model step (weights included) is printed: what one
actor of that step needs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from curation import synthetic  # noqa: E402
from curation.frames import FrameReader  # noqa: E402
from curation.objects.filters import FilterConfig  # noqa: E402
from curation.objects.grounding import (  # noqa: E402
    DETECTIONS,
    Grounder,
    GroundingConfig,
    GroundingModel,
    grounding_config,
    keyframe_request,
    tiny_tokenizer,
)
from curation.objects.morphology import MorphologyConfig  # noqa: E402
from curation.objects.references import ObjectReferences, ReferencesConfig  # noqa: E402
from curation.objects.segment import SegmentConfig, Segmenter, SegmentModel, segmenter_config  # noqa: E402
from schemas.ids import clip_id  # noqa: E402
from schemas.tables import INPUT  # noqa: E402


def make_clips(folder: Path, count: int, height: int, width: int, seconds: float) -> pa.Table:
    rows = []
    for i in range(count):
        path = synthetic.objects_video(folder / f"bench_{i:03d}_{height}x{width}.mp4", seconds=seconds,
                                       height=height, width=width, seed=i)
        frames = int(seconds * synthetic.FPS)
        video_id = f"{i:024x}"
        rows.append({INPUT: clip_id(video_id, 0, frames), "clip_id": clip_id(video_id, 0, frames),
                     "video_id": video_id, "uri": str(path), "start_frame": 0, "end_frame": frames,
                     "start_s": 0.0, "end_s": frames / synthetic.FPS, "fps": float(synthetic.FPS),
                     "width": width, "height": height, "status": "kept",
                     "caption": "A red ball rolls past a blue box.", "subjects": ["red ball", "blue box", "man"]})
    return pa.Table.from_pylist(rows)


def real_models(device: str):
    """GroundingDINO-base and SAM2.1-hiera-large architectures, random weights, bf16 on CUDA."""
    import torch
    from transformers import GroundingDinoForObjectDetection, Sam2Model

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    grounding = GroundingDinoForObjectDetection(grounding_config(tiny=False)).to(device, dtype).eval()
    segmenter = Sam2Model(segmenter_config(tiny=False)).to(device, dtype).eval()
    # BERT-base's vocabulary is not on disk; the tiny WordPiece vocabulary keeps BERT's
    # special ids, and a query of a few labels costs the same whatever the words.
    return (GroundingModel(grounding, tiny_tokenizer(), device, dtype),
            SegmentModel(segmenter, device, dtype))


def timed(step, batches: list[pa.Table], device: str) -> tuple[list[pa.Table], float, float | None]:
    """Run ``step`` on every batch (after a warm-up on the first); seconds and peak GPU GiB."""
    import torch

    step(batches[0])
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = [step(batch) for batch in batches]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None
    return out, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4, help="clips per call (the pools' batch_size)")
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--keyframes", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--real-arch", action="store_true", help="real-size architectures, random weights")
    parser.add_argument("--media", default=os.path.join(tempfile.gettempdir(), "magref-bench-stage2"))
    args = parser.parse_args()

    clips = make_clips(Path(args.media), args.clips, args.height, args.width, args.seconds)
    batches = [clips.slice(i, args.batch) for i in range(0, clips.num_rows, args.batch)]
    grounding_cfg = GroundingConfig(keyframes=args.keyframes)
    if args.real_arch:
        grounding, segmenter = real_models(args.device)
        kind = "GroundingDINO-base + SAM2.1-hiera-large architectures (random weights)"
    else:
        from curation.models import load

        grounding, segmenter = load("grounding", "tiny", device=args.device), load("segmenter", "tiny", device=args.device)
        kind = "tiny random models"
    steps = {
        "frames": FrameReader(keyframe_request(grounding_cfg)),
        "grounding": Grounder(grounding_cfg, model=grounding),
        "segment": Segmenter(SegmentConfig(), model=segmenter),
        "references": ObjectReferences(ReferencesConfig(), MorphologyConfig(), FilterConfig()),
    }
    print(f"stage 2 steps, {args.clips} clips of {args.width}x{args.height}, {args.keyframes} keyframes each, "
          f"batches of {args.batch}, {kind}, device {args.device}")
    results = {}
    for name, step in steps.items():
        batches, seconds, peak = timed(step, batches, args.device)
        results[name] = (seconds, peak)
        if name == "grounding":
            objects = sum(sum(1 for d in row if not d["face"]) for b in batches
                          for row in b.column(DETECTIONS).to_pylist())
            faces = sum(sum(1 for d in row if d["face"]) for b in batches for row in b.column(DETECTIONS).to_pylist())
    table = pa.concat_tables(batches, promote_options="permissive")
    statuses = ", ".join(f"{item['values']}={item['counts']}" for item in pc.value_counts(table.column("status")).to_pylist())
    print(f"object candidates: {objects} (+ {faces} face boxes for the face filter); rows by status: {statuses}")
    for name, (seconds, peak) in results.items():
        memory = f", peak GPU memory {peak:.2f} GiB" if peak is not None else ""
        print(f"  {name:<11} {seconds:7.3f} s  {args.clips / seconds:8.2f} clips/s  "
              f"{objects / seconds:8.2f} objects/s{memory}")
    total = sum(seconds for seconds, _ in results.values())
    print(f"  {'all steps':<11} {total:7.3f} s  {args.clips / total:8.2f} clips/s  {objects / total:8.2f} objects/s "
          "(one process, steps in sequence; the job runs them concurrently on their pools)")


if __name__ == "__main__":
    main()

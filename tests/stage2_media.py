"""Generated clips for stage 2's tests: videos on disk and a ``clips`` table that names them.

Building the clips table from the schema (rather than running stages 0-1) keeps the
stage-2 tests to seconds and lets them choose statuses, subjects and captions exactly.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from curation import synthetic
from pipelines.ledger import RunDir
from schemas.ids import clip_id
from schemas.io import write_part
from schemas.tables import CLIPS

FPS = synthetic.FPS


def make_clips(folder: Path, videos: int = 3, clips_per_video: int = 2, seconds: float = 1.0,
               size: tuple[int, int] = (96, 128)) -> pa.Table:
    """``videos`` generated videos cut into clips; every third clip is filtered (``motion``),
    the others kept with subjects, so a stage that reads kept clips only can be checked."""
    height, width = size
    per_clip = int(seconds * FPS)
    rows = []
    for v in range(videos):
        path = synthetic.objects_video(folder / f"objects_{v}.mp4", seconds=seconds * clips_per_video,
                                       height=height, width=width, seed=v)
        video_id = f"{v:024x}"
        for c in range(clips_per_video):
            start, end = c * per_clip, (c + 1) * per_clip
            kept = (v * clips_per_video + c) % 3 != 2
            rows.append({
                "clip_id": clip_id(video_id, start, end), "video_id": video_id, "uri": str(path),
                "start_frame": start, "end_frame": end, "start_s": start / FPS, "end_s": end / FPS,
                "fps": float(FPS), "width": width, "height": height, "motion": 2.0, "aesthetic": 5.0,
                "status": "kept" if kept else "motion",
                "caption": "A red ball rolls past a blue box on the grass." if kept else None,
                "subjects": ["red balls", "blue box", "man"] if kept else None,
            })
    return pa.Table.from_pylist(rows, schema=CLIPS)


def write_clips(run: Path, table: pa.Table, name: str = "clips-test") -> None:
    write_part(table, RunDir.of(str(run)).table("clips"), "clips", name=name)

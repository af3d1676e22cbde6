"""The stage 1 splitter operator: ``videos`` rows in, candidate ``clips`` rows out.

It sits above the scan (``curation/clips/scan.py``, one decode per video) and the clip
policy (``curation/clips/scenes.py``) it drives, so neither of them imports the other's
caller.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.clips.quality import QualityConfig
from curation.clips.scan import scan_video
from curation.clips.scenes import AUTO, TRANSNET, ScenesConfig
from curation.envelope import per_input, to_table
from curation.frames import FRAMES
from curation.models import load, pick_device
from schemas.ids import clip_id
from schemas.tables import CLIPS


class ClipSplitter:
    """Stage 1, step 1: ``videos`` rows in, candidate ``clips`` rows out, kept ones with their
    motion score and aesthetic frames (``FRAMES``).

    ``transition``, ``blank`` and ``too_short`` rows come out filtered; a video that fails
    to decode becomes one error row and none of its clips.
    """

    def __init__(self, config: ScenesConfig, quality: QualityConfig | None = None, models: Any = None,
                 device: str | None = None):
        if config.detector == AUTO:  # used outside a job, which resolves it from the cluster
            config = config.resolved(pick_device(device).startswith("cuda"))
        self.config = config
        self.quality = quality
        self.model = load("shot_boundaries", models, device=device) if self.config.detector == TRANSNET else None

    def scan(self, video: dict[str, Any]):
        return scan_video(video["uri"], self.config, self.quality, expected_frames=video.get("num_frames"),
                          shot_model=self.model)

    def split(self, video: dict[str, Any]) -> list[dict[str, Any]]:
        return self.rows(video, self.scan(video))

    def rows(self, video: dict[str, Any], scan) -> list[dict[str, Any]]:
        """One ``clips`` row per range the scan's clip policy produced."""
        rows = []
        for clip in scan.clips:
            row = {
                "clip_id": clip_id(video["video_id"], clip.start, clip.end), "video_id": video["video_id"],
                "uri": video["uri"], "start_frame": clip.start, "end_frame": clip.end,
                "start_s": clip.start_s, "end_s": clip.end_s, "fps": scan.fps,
                "width": video.get("width"), "height": video.get("height"),
                "motion": clip.motion, "aesthetic": None, "status": clip.status, "caption": None, "subjects": None,
            }
            if self.quality is not None:
                row[FRAMES] = clip.frames
            rows.append(row)
        return rows

    def __call__(self, batch: pa.Table) -> pa.Table:
        columns = [c for c in ("uri", "video_id", "num_frames", "width", "height") if c in batch.column_names]
        rows = per_input(batch.select(columns).to_pylist(), "video_id", self.split)
        return to_table(rows, _SCHEMA)


_SCHEMA = pa.schema([*CLIPS, pa.field(FRAMES, pa.binary())])

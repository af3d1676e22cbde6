"""The chain of stages as data: what each job reads, what it writes, which models it loads.

``StageJob`` (``pipelines/job.py``), ``run_all``, ``inspect_run`` and the user-error hints
all read these declarations, so a run's books agree on what a stage's inputs are. A
``Stage`` names its input table, id column, row filter and the columns the driver reads;
reads push both down into Parquet, so image and embedding columns never reach the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipelines.cli import UserError
from pipelines.ledger import RunDir
from schemas.io import Filter

KEPT_ONLY: Filter = [("status", "==", "kept")]
CLIP_COLUMNS = ("clip_id", "video_id", "uri", "start_frame", "end_frame", "start_s", "end_s", "fps",
                "width", "height", "caption", "subjects", "crop")


@dataclass(frozen=True)
class Stage:
    """A stage's place in the chain and what it reads, as data every tool shares."""

    name: str
    table: str  # the table it writes
    script: str  # pipelines/<script>.py
    input_table: str | None  # None: stage 0 reads raw files
    input_id: str  # the column that identifies one input (its ledger key)
    input_filter: tuple[tuple[str, str, Any], ...] = ()  # rows of the input table that are inputs
    input_columns: tuple[str, ...] = ()  # what the driver reads of them (empty: all)
    roles: tuple[str, ...] = ()  # model roles the stage loads (checked before Ray starts)

    @property
    def filter(self) -> Filter | None:
        return [tuple(f) for f in self.input_filter] or None

    def read_inputs(self, run: RunDir, columns: list[str] | None = None) -> pa.Table:
        """The stage's inputs in ``run`` (declared filter; declared or given columns)."""
        if not run.has(self.input_table):
            raise UserError(f"{run.root.uri()} has no {self.input_table} table: run "
                            f"{_producer_hint(self.input_table, run)} first")
        return run.read(self.input_table, columns or list(self.input_columns) or None, self.filter)


# The chain in order. run_all and inspect_run walk it (tests/test_commands_help.py checks
# that every script named here exists and parses --help). Stages 2-4 read kept clips only.
STAGES = (
    Stage("probe", "videos", "stage0_probe", None, "uri"),
    Stage("clips", "clips", "stage1_clips", "videos", "video_id",
          input_columns=("uri", "video_id", "num_frames", "width", "height"), roles=("aesthetic", "captioner")),
    Stage("objects", "objects", "stage2_objects", "clips", "clip_id", tuple(KEPT_ONLY), CLIP_COLUMNS,
          roles=("grounding", "segmenter", "captioner")),
    Stage("faces", "faces", "stage3_faces", "clips", "clip_id", tuple(KEPT_ONLY), CLIP_COLUMNS,
          roles=("face_analysis", "face_dlib")),
    # Stage 4: variants and backgrounds per kept clip; identity pairs across clips (its
    # inputs are identities with a selected face); then the samples, one per kept clip.
    Stage("pairs", "pairs", "stage4a_variants", "clips", "clip_id", tuple(KEPT_ONLY), CLIP_COLUMNS,
          roles=("editor", "inpainter")),
    Stage("cross_clip", "cross_pairs", "stage4b_cross_pairs", "faces", "identity_id", (("selected", "==", True),),
          ("identity_id",)),
    Stage("samples", "samples", "stage4c_samples", "clips", "clip_id", tuple(KEPT_ONLY), CLIP_COLUMNS),
)
STAGE = {stage.name: stage for stage in STAGES}

# Imports stand beside the chain (run_all does not run them): one input per key of the
# imported dataset. They write the chain's tables under the chain's stage names (so the
# samples assembly and inspect_run read an imported run like a curated one) and their own
# ``imports`` table, and the cross pairs under ``IMPORT_CROSS`` (keyed by pair id).
IMPORT_OPENS2V = Stage("opens2v", "imports", "import_opens2v", None, "key")
IMPORT_CROSS = "opens2v_cross"


def _producer_hint(table: str, run: RunDir) -> str:
    for stage in STAGES:
        if stage.table == table:
            extra = " --input VIDEOS" if stage.input_table is None else ""
            return f"pipelines/{stage.script}.py --run-dir {run.root.uri()}{extra}"
    return f"the stage that writes {table}"

"""The evaluator: every chosen metric on every entry, as rows of the ``scores`` table.

``Evaluator(config, models)`` loads each metric's models once (a metric whose model is
unavailable is skipped with one line naming the role and how to supply it) and maps a
batch of index rows (``entries.ENTRY_SCHEMA``; their references are read here) to one row per entry and metric output.
It is a plain ``curation``-style operator: ``python -m model.evaluate`` calls it in a loop,
``pipelines/evaluate_videos.py`` runs it on a Ray actor pool. A broken entry (missing
video, unreadable reference, no face) gives rows whose ``status`` says why; the rest score.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from curation.decode import IncompleteVideoError
from curation.envelope import per_input, to_table
from curation.operator import ActorPool, setting
from model.evaluate.aesthetic import Aesthetic
from model.evaluate.base import SCORED, Metric, MetricUnavailable, NotScored
from model.evaluate.entries import Entry, from_rows
from model.evaluate.faces import CurricularFaceSimilarity, IdentitySimilarity
from model.evaluate.judge import GmeScore, NaturalScore
from model.evaluate.motion import Motion
from model.evaluate.regions import Regions
from model.evaluate.subjects import BackgroundSimilarity, NexusScore, SubjectSimilarity
from model.evaluate.video import VideoFrames, VideoMissingError, read_video
from schemas.tables import SCORES

METRICS: dict[str, type[Metric]] = {
    "id_sim": IdentitySimilarity, "subj_sim": SubjectSimilarity, "bg_sim": BackgroundSimilarity,
    "aesthetic": Aesthetic, "motion": Motion, "gme_score": GmeScore,
    "nexus_score": NexusScore, "natural_score": NaturalScore, "facesim_cur": CurricularFaceSimilarity,
}
DINO_METRICS = ("subj_sim", "bg_sim", "nexus_score")
FACE_METRICS = ("id_sim", "facesim_cur")  # one face detector for both
PAPER = ("id_sim", "subj_sim", "bg_sim", "aesthetic", "motion_smoothness", "gme_score")  # Table 1-2 columns


@dataclass
class EvaluateConfig:
    metrics: list[str] = setting(factory=lambda: list(METRICS), help="families to run (see METRICS)")
    frames: int = setting(8, help="frames sampled evenly per video for the model metrics (motion uses every frame)")
    motion_side: int = setting(128, help="short side of the frames motion is measured on")
    faces: str = setting("insightface", help="ID-Sim's recognizer: insightface (ArcFace, the paper's) or dlib (offline)")
    bg_inpaint: str = setting("opencv", help="how Bg-Sim removes subjects: 'model' (the inpainter role, SDXL "
                                             "inpainting as in the paper) or 'opencv' (Telea: no weights)")
    pool: ActorPool = setting(factory=lambda: ActorPool(actors=1, batch_size=2, num_cpus=0.5, num_gpus=1.0),
                              help="batch_size = videos per call; one GPU per actor when the job uses GPUs (--gpus)")

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"evaluate.metrics: unknown {unknown}; known: {', '.join(METRICS)}")
        if self.frames < 1:
            raise ValueError(f"evaluate.frames must be >= 1, got {self.frames}")
        if self.bg_inpaint not in ("opencv", "model"):
            raise ValueError(f"evaluate.bg_inpaint: {self.bg_inpaint!r}; choose 'model' or 'opencv'")


def build_metrics(config: EvaluateConfig, models: Any = None, device: str | None = None,
                  regions: Regions | None = None, say: Callable[[str], None] | None = None) -> list[Metric]:
    """The chosen metrics, loaded; an unavailable one is reported through ``say`` and left out."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    built: list[Metric] = []
    shared: dict[str, Any] = {"regions": regions}  # one finder + one DINO for the DINO metrics, one face role
    for name in config.metrics:
        cls = METRICS[name]
        kwargs: dict[str, Any] = {}
        if name in FACE_METRICS:
            kwargs.update(backend=config.faces, faces=shared.get("faces"))
        if name in DINO_METRICS:
            kwargs.update(regions=shared["regions"], dino=shared.get("dino"))
        if name == "bg_sim":
            kwargs.update(inpaint=config.bg_inpaint)
        try:
            metric = cls(models, device, **kwargs)
        except MetricUnavailable as exc:
            say(str(exc))
            continue
        if name in DINO_METRICS:
            shared.update(regions=metric.regions, dino=metric.dino)
        if name in FACE_METRICS:
            shared["faces"] = metric.faces
        built.append(metric)
    return built


def _status_of(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, NotScored):
        return exc.status, str(exc)
    if isinstance(exc, VideoMissingError):
        return "no_video", str(exc)
    if isinstance(exc, (IncompleteVideoError, ValueError, OSError)):
        return "unreadable_video", f"{type(exc).__name__}: {exc}"
    return "metric_failed", f"{type(exc).__name__}: {exc}"


class Evaluator:
    """Entries in, score rows out (one per entry and metric output)."""

    def __init__(self, config: EvaluateConfig, models: Any = None, device: str | None = None,
                 regions: Regions | None = None, metrics: list[Metric] | None = None):
        self.config = config
        self.metrics = metrics if metrics is not None else build_metrics(config, models, device, regions)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Index rows in: their references are read here (``entries.from_rows``), not by the driver."""
        rows = batch.to_pylist()
        entries = {e.key: e for e in from_rows(rows)}
        return to_table(per_input(rows, "entry_id", lambda row: self.evaluate(entries[row["entry_id"]])), SCORES)

    def evaluate(self, entry: Entry) -> list[dict[str, Any]]:
        """Every metric's rows for one entry, never raising for the entry's own faults."""
        video: VideoFrames | None = None
        problem: tuple[str, str] | None = ("bad_reference", entry.error) if entry.error else None
        if problem is None:
            try:
                video = read_video(entry.video, self.config.frames, self.config.motion_side)
            except Exception as exc:  # noqa: BLE001 - the video's fault is every metric's status
                problem = _status_of(exc)
        rows = []
        for metric in self.metrics:
            started = time.perf_counter()
            values: dict[str, float] = {}
            status = problem
            if status is None:
                try:
                    values = metric.score(entry, video)
                except Exception as exc:  # noqa: BLE001 - one metric failing leaves the others
                    status = _status_of(exc)
            seconds = time.perf_counter() - started
            for output in metric.outputs:
                value = values.get(output)
                reason = status or (None if value is not None else ("not_scored", "no value for this output"))
                rows.append({"score_id": f"{entry.key}/{output}", "entry_id": entry.key, "metric": output,
                             "value": value, "status": SCORED if reason is None else reason[0],
                             "detail": None if reason is None else reason[1], "model": metric.model_ids,
                             "seconds": seconds, "video": str(entry.video)})
        return rows

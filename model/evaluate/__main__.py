"""``python -m model.evaluate``: score generated videos against their references and prompts.

    python -m model.evaluate --opens2v Open-Domain_Eval.json --videos VIDEOS --out-dir OUT --models tiny
    python -m model.evaluate --prompt-file prompts.txt --videos VIDEOS --out-dir OUT --generate --base tiny
    python -m model.evaluate --manifest RUN/samples --videos VIDEOS --out-dir OUT --html OUT/page.html

Inputs (one of): ``--manifest`` a samples table, ``--prompt-file`` the release's
``key@@prompt@@img1@@...`` lines, ``--opens2v`` OpenS2V-Eval's JSON; videos are
``VIDEOS/<key>.mp4``. ``--generate`` first runs ``model.sample`` (``--base``) for every entry
without a video. Writes ``OUT/scores.parquet`` (one row per video and metric, with the
model ids), ``OUT/summary.json`` (mean and bootstrap 95% interval per metric, the paper's
Total Score), ``OUT/opens2v/*.json`` (OpenS2V-Eval's per-metric files, alone in their folder
so their ``merge_result.py`` reads them) and ``OUT/opens2v_total.json`` (their merge). For
thousands of videos, ``pipelines/evaluate_videos.py`` runs the same scorer on Ray, resumably.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from curation.images import encode_png
from curation.models import ModelSourceError
from model import sample
from model.evaluate.entries import (
    EntryInputError,
    from_rows,
    index_entries,
    iter_entries,
)
from model.evaluate.opens2v import VERSIONS, WEIGHTS
from model.evaluate.outputs import write_outputs
from model.evaluate.scorer import METRICS, EvaluateConfig, Evaluator
from model.evaluate.summary import summary_text
from schemas.command import Parser, UserError, run_command


class EvaluateUsageError(UserError):
    """A mistake on the command line: one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m model.evaluate", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("inputs (one of)")
    src.add_argument("--manifest", help="a samples table (Parquet file or folder); videos named <sample_id>.mp4")
    src.add_argument("--prompt-file", help="release prompt lines key@@prompt@@img1@@img2...")
    src.add_argument("--opens2v", help="OpenS2V-Eval JSON {id: {img_paths, prompt, class_label}}")
    p.add_argument("--videos", required=True, help="folder of generated videos <key>.mp4")
    p.add_argument("--out-dir", required=True, help="where scores, summary and OpenS2V JSONs go")
    p.add_argument("--models", action="append", default=[], metavar="SOURCE|ROLE=SOURCE",
                   help="'tiny', 'default' or ROLE=hub id/dir (repeatable), as for the stages")
    p.add_argument("--metrics", default=",".join(METRICS), help=f"comma-separated families of: {', '.join(METRICS)}")
    p.add_argument("--frames", type=int, default=EvaluateConfig.frames, help="frames sampled per video")
    p.add_argument("--faces", choices=("insightface", "dlib"), default=EvaluateConfig.faces,
                   help="ID-Sim recognizer: insightface (ArcFace, the paper's) or dlib (offline weights)")
    p.add_argument("--bg-inpaint", choices=("opencv", "model"), default=EvaluateConfig.bg_inpaint,
                   help="Bg-Sim removes subjects with OpenCV Telea (no weights) or the inpainter role (the paper's SDXL)")
    p.add_argument("--domain", choices=sorted(WEIGHTS), default="Open-Domain", help="OpenS2V total's weights")
    p.add_argument("--opens2v-version", choices=VERSIONS, default="1.0",
                   help="OpenS2V-Eval harness whose JSON layout and weights to follow (1.1: motion_amplitude + "
                        "motion_smoothness)")
    p.add_argument("--html", help="write a page of frames, references and scores here")
    p.add_argument("--generate", action="store_true", help="run model.sample first for entries without a video")
    p.add_argument("--base", default="tiny", help="with --generate: the backbone for model.sample ('tiny' or a dir)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: GPU if present)")
    return p


def parse_models(specs: list[str]) -> str | dict[str, str] | None:
    """``--models tiny`` or ``--models role=source ...`` (the stages' spelling)."""
    if not specs:
        return None
    plain = [s for s in specs if "=" not in s]
    mapping = dict(s.split("=", 1) for s in specs if "=" in s)
    if len(plain) > 1:
        raise EvaluateUsageError(f"--models: give one plain source, got {plain}")
    if plain:
        mapping.setdefault("*", plain[0])
    return mapping if mapping.keys() != {"*"} else mapping["*"]


def load_index(args: argparse.Namespace) -> pa.Table:
    """The input's index (``entries.index_entries``): the images are read one chunk at a time."""
    given = [(fmt, path) for fmt, path in (("samples", args.manifest), ("prompt_file", args.prompt_file),
                                           ("opens2v", args.opens2v)) if path]
    if len(given) != 1:
        raise EvaluateUsageError("give exactly one of --manifest, --prompt-file or --opens2v")
    fmt, path = given[0]
    return index_entries(path, args.videos, fmt)


def generate_missing(index: pa.Table, videos: Path, base: str, device: str | None) -> int:
    """``model.sample`` for every readable entry without a video, through a release prompt file
    (references written as PNGs beside it, labelled ``word=path``), so all three inputs work."""
    missing = [row for row in index.to_pylist() if not Path(row["video"]).exists()]
    todo = [e for e in from_rows(missing) if not e.error]
    if not todo:
        return 0
    videos.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="magref-eval-") as tmp:
        lines = []
        for e in todo:
            fields = []
            for i, ref in enumerate(e.refs):
                path = Path(tmp) / f"{e.key}.{i}.png"
                path.write_bytes(encode_png(ref.image))
                word = ref.label if ref.label and ref.label.lower() in e.prompt.lower() else ""
                fields.append(f"{word}={path}" if word else str(path))
            lines.append("@@".join([e.key, " ".join(e.prompt.split()), *fields]))
        prompt_file = Path(tmp) / "prompts.txt"
        prompt_file.write_text("\n".join(lines) + "\n")
        argv = ["--base", base, "--prompt-file", str(prompt_file), "--out-dir", str(videos)]
        code = sample.main(argv + (["--device", device] if device else []))
    print(f"[evaluate] generated {sum(e.video.exists() for e in todo)} of {len(todo)} missing videos "
          f"(model.sample exit {code})", flush=True)
    return len(todo)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        config = EvaluateConfig(metrics=metrics, frames=args.frames, faces=args.faces, bg_inpaint=args.bg_inpaint)
        models = parse_models(args.models)
        index = load_index(args)
        if args.generate:
            generate_missing(index, Path(args.videos), args.base, args.device)
        evaluator = Evaluator(config, models, args.device)
    except (EvaluateUsageError, EntryInputError, ModelSourceError, ValueError) as exc:
        raise UserError(str(exc)) from None
    started, rows = time.perf_counter(), []
    for n, entry in enumerate(iter_entries(index), 1):
        rows.extend(evaluator.evaluate(entry))
        print(f"[{n}/{index.num_rows}] {entry.key}", flush=True)
    summary = write_outputs(rows, iter_entries(index) if args.html else [], Path(args.out_dir), args.domain,
                            args.html, version=args.opens2v_version)
    print(summary_text(summary))
    print(f"OpenS2V {args.domain} total (their merge): {summary['opens2v']['total_score']:.4f}; "
          f"{index.num_rows} videos in {time.perf_counter() - started:.1f}s -> {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))

"""``python -m model.sample``: MAGREF videos from reference images, one or a batch.

Single video::

    python -m model.sample --base tiny --ref a.png --ref b.png \\
        --prompt "a man walks his dog" --subject man=a.png --subject dog=b.png --out out.mp4

Batch: ``--prompt-file FILE`` (the release's ``key@@prompt@@img1@@img2...`` lines; image
paths relative to the working directory as in the release's ``assets/*.txt``, or to the
file's folder; an image may be written ``word=path`` to make ``word`` its subject) or
``--manifest T.parquet``
(a table of the ``samples`` schema: faces, objects and background become the references,
their labels the subject words; ``--variants`` takes the generated variants), with
``--out-dir DIR``; the model loads once, videos
already written are skipped, a bad item is reported and the rest still run.

Each video is an H.264 mp4 (PyAV) with its canvas beside it as ``NAME.canvas.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from curation.images import IMAGE_ERRORS
from curation.images import read_image as open_image
from curation.models import load, pick_device
from model.conditioning import MAX_REFERENCES, ConditioningError, check_video_size
from model.disentangle import word_spans
from model.pipeline import (
    CLIP_INPUTS,
    DEFAULT_BASE,
    DEFAULTS,
    TIMESTEP_GRIDS,
    SamplingDefaults,
    check_rope_capacity,
)
from model.tiny import TINY_DEFAULTS
from model.tiny import TINY_DEFAULTS as t
from model.weights.checkpoint import CheckpointError
from model.weights.lora import load_lora
from schemas.command import Parser, run_command
from schemas.io import Location, atomic_write, read_manifest
from schemas.samples import sample_references
from schemas.validate import SchemaError


class SampleInputError(ValueError):
    """A user input that cannot be sampled (missing/unreadable image, bad subject, ...)."""


@dataclass
class Job:
    """One video to make: references, prompt, (word, reference index) subjects, output."""

    key: str
    prompt: str
    refs: list[Image.Image]
    subjects: list[tuple[str, int]] = field(default_factory=list)
    out: Path = Path("out.mp4")


def read_image(path: str | os.PathLike, what: str = "reference image") -> Image.Image:
    """Open an image fully now, so a bad file fails before any model loads."""
    path = Path(path)
    if not path.is_file():
        raise SampleInputError(f"{what} {str(path)!r} does not exist")
    try:
        return open_image(path)
    except IMAGE_ERRORS as exc:
        raise SampleInputError(f"cannot read {what} {str(path)!r}: {exc}") from exc


def image_from_bytes(data: bytes, what: str) -> Image.Image:
    try:
        return open_image(data)
    except IMAGE_ERRORS as exc:
        raise SampleInputError(f"cannot read {what}: {exc}") from exc


def check_ref_count(count: int, key: str = "") -> None:
    where = f" ({key})" if key else ""
    if count == 0:
        raise SampleInputError(f"no reference image given{where}")
    if count > MAX_REFERENCES:
        raise SampleInputError(f"{count} reference images{where}; MAGREF takes at most "
                               f"{MAX_REFERENCES} (one canvas of at most 4x2 cells)")


def parse_subjects(specs: Sequence[str], ref_paths: Sequence[str]) -> list[tuple[str, int]]:
    """``word=REF`` → (word, index): REF is one of the ``--ref`` paths, its file name, or a
    0-based index into them."""
    subjects = []
    for spec in specs:
        word, sep, ref = spec.partition("=")
        if not sep or not word.strip() or not ref:
            raise SampleInputError(f"--subject {spec!r} is not WORD=REF (e.g. man=a.png)")
        matches = [i for i, p in enumerate(ref_paths)
                   if ref in (p, os.path.basename(p)) or os.path.abspath(ref) == os.path.abspath(p)]
        if not matches and ref.isdigit() and int(ref) < len(ref_paths):
            matches = [int(ref)]
        if len(matches) != 1:
            raise SampleInputError(f"--subject {spec!r}: {ref!r} names "
                                   f"{'no' if not matches else 'more than one'} --ref image")
        subjects.append((word.strip(), matches[0]))
    return subjects


def resolve_image(spec: str, base: Path, where: str) -> Path:
    """A prompt-file image path: as written (relative to the working directory, which is how
    the release's ``assets/*.txt`` are written: run from the repository root), else relative
    to the prompt file's folder (so a self-contained folder of prompts and images also runs)."""
    tried = [Path(spec)] if Path(spec).is_absolute() else [Path(spec), base / spec]
    for path in tried:
        if path.is_file():
            return path
    raise SampleInputError(f"{where}: reference image {spec!r} does not exist (looked for "
                           + " and ".join(repr(str(p)) for p in tried) + ")")


def prompt_file_entries(path: str) -> list[tuple[str, str, list[tuple[str, Path]]] | tuple[str, str]]:
    """The lines of a release prompt file as ``(key, prompt, [(word, image path), ...])``, the
    images located but not opened (``jobs_from_prompt_file`` opens them; evaluation leaves that
    to the task that scores the line), and ``(key, error)`` for lines that cannot run.

    Fields are stripped and empty image fields (a trailing ``@@``) ignored. An image field may
    be ``word=path`` (our extension: ``word`` becomes that reference's subject word, ``""``
    when none) unless the whole field is itself an existing path. Blank lines and ``#``
    comments are skipped.
    """
    base = Path(path).parent
    items: list[tuple[str, str, list[tuple[str, Path]]] | tuple[str, str]] = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.strip().split("@@")]
        key = parts[0] or f"line{n}"
        fields = [p for p in parts[2:] if p]
        try:
            if len(parts) < 2 or not fields:
                raise SampleInputError(f"{path}:{n}: expected key@@prompt@@img1[@@img2...]")
            check_ref_count(len(fields), key)
            images = []
            for field_ in fields:
                word, img = "", field_
                if "=" in field_ and not Path(field_).is_file() and not (base / field_).is_file():
                    word, _, img = field_.rpartition("=")
                images.append((word.strip(), resolve_image(img, base, f"{path}:{n}")))
            items.append((key, parts[1], images))
        except SampleInputError as exc:
            items.append((key, str(exc)))
    return items


def jobs_from_prompt_file(path: str, out_dir: Path) -> list[Job | tuple[str, str]]:
    """Release format ``key@@prompt@@img1@@img2...``, read as the release's ``generate.py`` does
    (the lines as ``prompt_file_entries`` reads them). Returns jobs, and ``(key, error)`` for
    lines that cannot run, so one bad line does not stop a batch."""
    items: list[Job | tuple[str, str]] = []
    for item in prompt_file_entries(path):
        if len(item) == 2:
            items.append(item)
            continue
        key, prompt, images = item
        try:
            refs = [read_image(image) for _, image in images]
            subjects = [(word, i) for i, (word, _) in enumerate(images) if word]
            items.append(Job(key, prompt, refs, subjects, out_dir / f"{key}.mp4"))
        except (SampleInputError, ConditioningError) as exc:
            items.append((key, str(exc)))
    return items


def jobs_from_samples(path: str, out_dir: Path, use_variants: bool = False) -> list[Job | tuple[str, str]]:
    """Rows of a ``samples`` table (file or folder), validated against ``schemas``.

    References come in the order ``schemas.samples.sample_references`` gives (faces,
    objects, background); a face's or object's ``label`` becomes its subject word when the
    caption contains it, so disentanglement binds what stages 2-3 found.
    """
    try:
        table = read_manifest(path, "samples")
    except (SchemaError, FileNotFoundError) as exc:
        raise SampleInputError(str(exc)) from exc
    items: list[Job | tuple[str, str]] = []
    for row in table.to_pylist():
        key = str(row["sample_id"])
        try:
            found = sample_references(row, use_variants)
            check_ref_count(len(found), key)
            refs = [image_from_bytes(r.image, f"{r.kind} reference {i} of sample {key}") for i, r in enumerate(found)]
            words = [(r.word, i) for i, r in enumerate(found) if r.word and word_spans(row["caption"], r.word)]
            items.append(Job(key, row["caption"], refs, words, out_dir / f"{key}.mp4"))
        except SampleInputError as exc:
            items.append((key, str(exc)))
    return items


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """uint8 [F, H, W, 3] → H.264 mp4, written to a temp name and renamed when complete."""
    import av

    with atomic_write(Location.of(str(path))) as tmp, av.open(tmp.path, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def canvas_path(video: Path) -> Path:
    return video.with_name(video.stem + ".canvas.png")


def preset_defaults(base: str) -> SamplingDefaults:
    """The release's settings, or the tiny preset's sizes (its rotary table holds 512 px)."""
    if base == "tiny":
        return TINY_DEFAULTS
    return DEFAULTS


def build_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = Parser(prog="python -m model.sample", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base", default=DEFAULT_BASE, help="diffusers Wan2.1 I2V dir, hub id, or 'tiny'")
    p.add_argument("--checkpoint",
                   help="MAGREF safetensors file, or a folder: the release as shipped, or what "
                        "python -m model.convert_release wrote (always loaded with full coverage)")
    p.add_argument("--lora", help="LoRA safetensors from model.train --lora-rank (adapters + magref.alpha)")
    src = p.add_argument_group("inputs (one of)")
    src.add_argument("--ref", action="append", default=[], help="reference image (1-8), repeatable")
    src.add_argument("--prompt-file", help="lines key@@prompt@@img1@@img2...")
    src.add_argument("--manifest", help="a samples table (Parquet file or folder, the schemas.tables.SAMPLES schema)")
    src.add_argument("--samples", dest="manifest", help=argparse.SUPPRESS)  # the old spelling of --manifest
    p.add_argument("--variants", action="store_true",
                   help="with --manifest: use the generated variants I' where present (default: the originals)")
    p.add_argument("--prompt", help="text prompt (single mode)")
    p.add_argument("--subject", action="append", default=[], help="WORD=REF, repeatable (Eq. 6)")
    p.add_argument("--out", default="out.mp4", help="output mp4 (single mode)")
    p.add_argument("--out-dir", default="samples_out", help="output folder (batch modes)")
    p.add_argument("--overwrite", action="store_true", help="batch: redo videos that exist")
    p.add_argument("--negative-prompt", default=d.negative_prompt)
    p.add_argument("--height", type=int, help=f"default {d.height} ({t.height} with --base tiny)")
    p.add_argument("--width", type=int, help=f"default {d.width} ({t.width} with --base tiny)")
    p.add_argument("--frames", type=int, help=f"frames generated, 4k+1; default {d.num_frames} "
                                               f"({t.num_frames} with --base tiny)")
    p.add_argument("--drop-first", type=int, default=d.drop_first, help="frames dropped at the start")
    p.add_argument("--steps", type=int, help=f"default {d.num_inference_steps} "
                                              f"({t.num_inference_steps} with --base tiny)")
    p.add_argument("--guidance", type=float, default=d.guidance_scale)
    p.add_argument("--shift", type=float, default=d.flow_shift, help="UniPC flow shift")
    p.add_argument("--timesteps", choices=TIMESTEP_GRIDS, default="release",
                   help="release: the MAGREF release's grid (linspace(0.999, 0) then shift); "
                        "diffusers: UniPC's own (linspace(1, 0.001) then shift)")
    p.add_argument("--clip-input", choices=CLIP_INPUTS, default="squash",
                   help="squash: the whole canvas resized to CLIP's square, as the release; "
                        "crop: diffusers' resize + centre crop (drops the outer references)")
    p.add_argument("--shuffle-refs", type=int, metavar="SEED",
                   help="deal references to random cells with this seed (the release shuffles "
                        "with an unseeded RNG every run); default: reference k in cell k")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--fps", type=int, default=d.fps)
    p.add_argument("--device", default=None, help="cuda / cpu (default: GPU if present)")
    p.add_argument("--low-memory", action="store_true",
                   help="model CPU offload + VAE tiling/slicing (GPU only)")
    return p


def gather_jobs(args: argparse.Namespace) -> list[Job | tuple[str, str]]:
    modes = [bool(args.ref), bool(args.prompt_file), bool(args.manifest)]
    if sum(modes) != 1:
        raise SampleInputError("give exactly one of --ref (single video), --prompt-file or --manifest")
    if args.ref:
        if not args.prompt:
            raise SampleInputError("--prompt is required with --ref")
        check_ref_count(len(args.ref))
        refs = [read_image(r) for r in args.ref]
        return [Job("out", args.prompt, refs, parse_subjects(args.subject, args.ref), Path(args.out))]
    if args.subject:
        raise SampleInputError("--subject is for single mode; in a prompt file write word=path")
    if args.prompt_file:
        if not Path(args.prompt_file).is_file():
            raise SampleInputError(f"prompt file {args.prompt_file!r} does not exist")
        return jobs_from_prompt_file(args.prompt_file, Path(args.out_dir))
    if not Path(args.manifest).exists():
        raise SampleInputError(f"--manifest {args.manifest!r} does not exist")
    return jobs_from_samples(args.manifest, Path(args.out_dir), use_variants=args.variants)


def load_pipeline(args: argparse.Namespace) -> Any:
    import torch

    device = pick_device(args.device)
    on_gpu = device.startswith("cuda")
    dtype = torch.bfloat16 if on_gpu and args.base != "tiny" else torch.float32
    low = args.low_memory and on_gpu
    pipe = load("video_backbone", args.base, device="cpu" if low else device, dtype=dtype)
    if args.checkpoint:
        pipe.load_magref_checkpoint(args.checkpoint)
    if args.lora:
        load_lora(args.lora, pipe.transformer, pipe.disentangler)
    if low:
        pipe.enable_low_memory(device)
    elif args.low_memory:
        print("note: --low-memory needs a GPU; running without offload", file=sys.stderr)
    return pipe


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m model.sample``: a user's mistake is one line and exit 2 (``schemas/command.py``)."""
    return run_command(_sample_command, argv, (SampleInputError, ConditioningError, CheckpointError))


def _sample_command(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    preset = preset_defaults(args.base)
    for arg, field_ in (("height", "height"), ("width", "width"), ("frames", "num_frames"),
                        ("steps", "num_inference_steps")):
        if getattr(args, arg) is None:
            setattr(args, arg, getattr(preset, field_))
    try:
        check_video_size(args.height, args.width, args.frames)
        if not 0 <= args.drop_first < args.frames:
            raise SampleInputError(f"--drop-first {args.drop_first} must be below --frames {args.frames}")
        if args.checkpoint and not Path(args.checkpoint).exists():
            raise SampleInputError(f"checkpoint {args.checkpoint!r} does not exist")
        if args.lora and not Path(args.lora).is_file():
            raise SampleInputError(f"LoRA file {args.lora!r} does not exist")
        items = gather_jobs(args)
    except ConditioningError as exc:
        raise SampleInputError(str(exc)) from None
    single = bool(args.ref)
    jobs = [j for j in items if isinstance(j, Job)]
    failed = [j for j in items if not isinstance(j, Job)]
    todo = [j for j in jobs if single or args.overwrite or not j.out.exists()]
    skipped = len(jobs) - len(todo)
    pipe = None
    if todo:
        try:
            pipe = load_pipeline(args)
            check_rope_capacity(pipe.transformer, args.height, args.width, args.frames)
        except (CheckpointError, ConditioningError) as exc:
            raise SampleInputError(str(exc)) from None
    start, written = time.time(), 0
    for n, job in enumerate(todo, 1):
        try:
            out = pipe(job.refs, job.prompt, subjects=job.subjects,
                       negative_prompt=args.negative_prompt, height=args.height,
                       width=args.width, num_frames=args.frames, num_inference_steps=args.steps,
                       guidance_scale=args.guidance, flow_shift=args.shift, seed=args.seed,
                       drop_first=args.drop_first, clip_input=args.clip_input,
                       timestep_grid=args.timesteps, shuffle_seed=args.shuffle_refs)
            write_mp4(job.out, out.frames, args.fps)
            out.canvas.image.save(canvas_path(job.out))
            written += 1
            print(f"[{n}/{len(todo)}] {job.key}: {job.out} ({len(out.frames)} frames)")
        except (ValueError, OSError) as exc:
            if single:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            failed.append((job.key, str(exc)))
    if not single:
        print(f"done: {written} written, "
              f"{skipped} already there, {len(failed)} failed, {time.time() - start:.1f}s")
    for key, reason in failed:
        print(f"failed {key}: {reason}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

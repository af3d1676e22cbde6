"""``python -m model.train`` options: one dataclass, its command line, and its checks.

Defaults are the paper's where it gives numbers (section 4.1: AdamW 0.9/0.999, weight
decay 0.01, lr 1e-5, cosine annealing with warm restarts, clipping at 1.0) and Wan2.1
480P's otherwise (16 fps, 81 frames, 832x480 and its portrait/square siblings, flow
shift 3.0). Every mistake a user can make on the command line becomes ``UsageError``:
one line naming the option and the fix, exit code 2.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

from model.train.data import DEFAULT_BUCKETS, FIRST_FRAMES, DataConfig
from model.train.optim import OptimConfig
from schemas.command import Parser, UserError

TIMESTEP_SAMPLING = ("shift", "uniform", "logit-normal")
# Options that may change between a run and its resume without changing the result.
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "keep_checkpoints", "data_workers", "resume",
                     "log_every", "device", "manifest", "cache"}


class UsageError(UserError, ValueError):
    """A command-line mistake; the message names the option and the fix."""


@dataclass(frozen=True)
class TrainConfig:
    out: str
    base: str = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
    manifest: str | None = None        # samples table (file or folder, local or URI)
    cache: str | None = None           # latent cache root (pipelines/cache_latents.py)
    steps: int = 1000
    batch_size: int = 1                # global: examples per optimiser step over all ranks
    micro_batch: int | None = None     # per rank per forward; None = batch_size / ranks
    optim: OptimConfig = field(default_factory=OptimConfig)
    timestep_sampling: str = "shift"   # how sigma = 1 - t is drawn (Wan: shifted uniform)
    shift: float = 3.0
    lora_rank: int | None = None       # None = full fine-tuning
    lora_alpha: float | None = None
    gradient_checkpointing: bool = True
    mixed_precision: str = "bf16"      # bf16 autocast on GPU; CPU always trains in fp32
    checkpoint_every: int = 500
    keep_checkpoints: int | None = 3
    resume: str | None = None          # "auto" or a checkpoint folder
    seed: int = 0
    device: str | None = None
    data_workers: int = 2
    log_every: int = 1
    data: DataConfig = field(default_factory=DataConfig)

    @property
    def lora(self) -> bool:
        return self.lora_rank is not None

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def differences(self, saved: dict[str, Any]) -> list[str]:
        """Options that differ from a checkpoint's config and would change the result."""
        mine = self.to_dict()
        return sorted(k for k in mine if k not in RESUMABLE_CHANGES and mine[k] != saved.get(k))


def _bucket(text: str) -> tuple[int, int]:
    try:
        width, height = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT (e.g. 832x480)") from None
    return width, height


def build_parser() -> argparse.ArgumentParser:
    d, o, dd = TrainConfig(out=""), OptimConfig(), DataConfig()
    p = Parser(prog="python -m model.train",
                                description="Train MAGREF on a samples table (flow matching, Eq. 8-10).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--manifest", help="samples table: Parquet file or folder (local or pyarrow URI)")
    p.add_argument("--cache", help="latent cache from pipelines/cache_latents.py (then no VAE/UMT5/CLIP loads)")
    p.add_argument("--base", default=d.base, help="diffusers Wan2.1 I2V dir, hub id, or 'tiny'")
    p.add_argument("--out", required=True, help="output folder: checkpoints, loss.csv, loss.png, summary.json")
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps (total, including resumed ones)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch: examples per step over all ranks")
    p.add_argument("--micro-batch", type=int, help="examples per rank per forward (default: batch-size / ranks)")
    g = p.add_argument_group("optimiser (paper section 4.1)")
    g.add_argument("--lr", type=float, default=o.lr)
    g.add_argument("--alpha-lr", type=float, default=o.alpha_lr,
                   help="learning rate of the Eq. 6 alphas (no weight decay on them)")
    g.add_argument("--betas", type=float, nargs=2, default=list(o.betas))
    g.add_argument("--weight-decay", type=float, default=o.weight_decay)
    g.add_argument("--restart-steps", type=int, help="cosine cycle length T_0 (default: a quarter of --steps)")
    g.add_argument("--restart-mult", type=int, default=o.restart_mult, help="cycle growth T_mult")
    g.add_argument("--min-lr", type=float, default=o.min_lr, help="eta_min of each cycle")
    g.add_argument("--max-grad-norm", type=float, default=o.max_grad_norm)
    g.add_argument("--timestep-sampling", choices=TIMESTEP_SAMPLING, default=d.timestep_sampling)
    g.add_argument("--shift", type=float, default=d.shift, help="flow shift for --timestep-sampling shift")
    g = p.add_argument_group("what is trained")
    g.add_argument("--lora-rank", type=int, help="train LoRA adapters of this rank (default: full fine-tuning)")
    g.add_argument("--lora-alpha", type=float, help="LoRA alpha (default: the rank)")
    g.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    g.add_argument("--mixed-precision", choices=("bf16", "no"), default=d.mixed_precision)
    add_data_arguments(p.add_argument_group("data"), dd)
    g.add_argument("--data-workers", type=int, default=d.data_workers, help="decode threads ahead of training")
    g = p.add_argument_group("run")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    g.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, help="0 keeps all")
    g.add_argument("--resume", help="'auto' (newest checkpoint in --out) or a checkpoint folder")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", help="cuda / cpu (default: GPU if present)")
    g.add_argument("--log-every", type=int, default=d.log_every, help="steps between loss.csv rows")
    return p


def add_data_arguments(g: Any, dd: DataConfig | None) -> None:
    """The data options (``DataConfig``), one spelling for ``model.train`` and ``pipelines/cache_latents.py``.

    ``dd`` gives the defaults; ``None`` leaves every option unset (the cache job then keeps
    its config's values for the options not given, see :func:`data_settings`).
    """
    def default(name: str) -> Any:
        return getattr(dd, name) if dd is not None else None

    g.add_argument("--fps", type=float, default=default("fps"), help="training frame rate")
    g.add_argument("--frames", type=int, default=default("num_frames"), help="frames per example (4k+1)")
    g.add_argument("--min-frames", type=int, default=default("min_frames"), help="shorter clips are skipped")
    g.add_argument("--bucket", type=_bucket, action="append",
                   help=f"size bucket WxH, repeatable (default: {' '.join(f'{w}x{h}' for w, h in DEFAULT_BUCKETS)})")
    g.add_argument("--first-frame", choices=FIRST_FRAMES, default=default("first_frame"),
                   help="the target's frame 0: the canvas (as the release was trained) or the clip's")
    g.add_argument("--variant-prob", type=float, default=default("variant_prob"))
    g.add_argument("--background-prob", type=float, default=default("background_prob"))
    g.add_argument("--no-shuffle-refs", dest="shuffle_refs", action="store_false",
                   default=True if dd is not None else None)
    g.add_argument("--caption-dropout", type=float, default=default("caption_dropout"))
    g.add_argument("--augmentations", type=int, help="cycle this many augmentation seeds (a cache's count)")


# DataConfig field for each data option's argparse dest (add_data_arguments).
DATA_OPTIONS = {"fps": "fps", "frames": "num_frames", "min_frames": "min_frames", "bucket": "buckets",
                "variant_prob": "variant_prob", "background_prob": "background_prob",
                "shuffle_refs": "shuffle_refs", "caption_dropout": "caption_dropout",
                "augmentations": "augmentations", "first_frame": "first_frame"}


def data_settings(args: argparse.Namespace) -> list[str]:
    """The data options a user gave, as ``data.FIELD=VALUE`` config keys (the cache job's ``--set``)."""
    out = []
    for dest, name in DATA_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is not None:
            out.append(f"data.{name}={json.dumps([list(v) for v in value] if dest == 'bucket' else value)}")
    return out


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse and check; every problem is a ``UsageError`` (argparse's own exit 2 for syntax)."""
    a = build_parser().parse_args(argv)
    if not a.manifest and not a.cache:
        raise UsageError("give --manifest (a samples table) or --cache (a latent cache)")
    if a.manifest and not a.cache and "://" not in a.manifest and not Path(a.manifest).exists():
        raise UsageError(f"--manifest {a.manifest!r} does not exist")
    if a.cache and "://" not in a.cache and not Path(a.cache).is_dir():
        raise UsageError(f"--cache {a.cache!r} is not a folder; build one with pipelines/cache_latents.py")
    for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
        if getattr(a, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    if a.micro_batch is not None and a.micro_batch < 1:
        raise UsageError("--micro-batch must be >= 1")
    if a.alpha_lr < 0:
        raise UsageError("--alpha-lr must be >= 0 (0 freezes the alphas)")
    if a.lora_rank is not None and a.lora_rank < 1:
        raise UsageError("--lora-rank must be >= 1")
    try:
        data = DataConfig(fps=a.fps, num_frames=a.frames, min_frames=min(a.min_frames, a.frames),
                          buckets=tuple(a.bucket) if a.bucket else DEFAULT_BUCKETS,
                          variant_prob=a.variant_prob, background_prob=a.background_prob,
                          shuffle_refs=a.shuffle_refs, caption_dropout=a.caption_dropout,
                          augmentations=a.augmentations, seed=a.seed, first_frame=a.first_frame)
        optim = OptimConfig(lr=a.lr, alpha_lr=a.alpha_lr, betas=tuple(a.betas),
                            weight_decay=a.weight_decay, restart_steps=a.restart_steps,
                            restart_mult=a.restart_mult, min_lr=a.min_lr,
                            max_grad_norm=a.max_grad_norm)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if (optim.restart_steps is not None and optim.restart_steps < 1) or optim.restart_mult < 1:
        raise UsageError("--restart-steps and --restart-mult must be >= 1")
    return TrainConfig(
        out=a.out, base=a.base, manifest=a.manifest, cache=a.cache, steps=a.steps,
        batch_size=a.batch_size, micro_batch=a.micro_batch, optim=optim,
        timestep_sampling=a.timestep_sampling, shift=a.shift, lora_rank=a.lora_rank,
        lora_alpha=a.lora_alpha, gradient_checkpointing=a.gradient_checkpointing,
        mixed_precision=a.mixed_precision, checkpoint_every=a.checkpoint_every,
        keep_checkpoints=a.keep_checkpoints or None, resume=a.resume, seed=a.seed,
        device=a.device, data_workers=a.data_workers, log_every=a.log_every, data=data)


def micro_batching(config: TrainConfig, world: int) -> tuple[int, int]:
    """(micro batch per rank, accumulation steps) that make up the global batch exactly."""
    if config.batch_size % world:
        raise UsageError(f"--batch-size {config.batch_size} does not split over {world} processes; "
                         f"use a multiple of {world}")
    per_rank = config.batch_size // world
    micro = config.micro_batch or per_rank
    if per_rank % micro:
        raise UsageError(f"--micro-batch {micro} does not divide the {per_rank} examples each of "
                         f"{world} processes takes per step (--batch-size {config.batch_size})")
    return micro, per_rank // micro


def with_cache_data(config: TrainConfig, cache_meta: dict[str, Any]) -> TrainConfig:
    """A cached run takes the data settings the cache was built with (they are baked in)."""
    saved = {"first_frame": "clip", **cache_meta["data"]}  # caches before first_frame held the clip's
    data = DataConfig(**{f.name: saved[f.name] for f in fields(DataConfig) if f.name in saved})
    data = replace(data, buckets=tuple(tuple(b) for b in data.buckets))
    return replace(config, data=data)

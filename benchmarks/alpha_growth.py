"""How far the Eq. 6 alphas move in a default training run, and what share of z_0 they change.

    PYTHONPATH=. python benchmarks/alpha_growth.py --out /tmp/alpha [--steps 1000] [--base tiny]

Trains ``python -m model.train`` at its default optimiser settings (the paper's lr 1e-5 for
the backbone; whatever the code's alpha defaults are) on one generated clip with a subject
word, from a latent cache, checkpointing every ``--every`` steps; then reads each
checkpoint's ``magref.alpha`` and, with the final weights, measures the Eq. 6 term's share
of the first latent frame's tokens: ``||alpha_l sum_i M_i v_i|| / ||z_0||`` per block, over
the subject's tokens and over all of z_0. Prints one JSON object. Runs with any checkout on
PYTHONPATH, so the same script measures the code before and after a change.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.images import encode_png  # noqa: E402
from curation.models import load  # noqa: E402
from curation.synthetic import scene_frames, write_video  # noqa: E402
from model.train.data import DataConfig, SamplesTable, make_example  # noqa: E402
from model.train.latent_cache import cache_samples  # noqa: E402
from model.train.latents import encode_examples, load_encoders  # noqa: E402
from model.train.loop import main as train_main  # noqa: E402
from model.velocity import magref_velocity  # noqa: E402
from schemas import schema_for, write_table  # noqa: E402

CAPTION = "a man walks in the park"


def samples(folder: Path) -> Path:
    """One 12-frame 32x32 clip at 16 fps whose face reference answers to "man"."""
    frames = list(scene_frames(12, [], height=32, width=32, seed=3))
    uri = write_video(folder / "clip.mp4", frames, fps=16)
    row = {"sample_id": "one", "clip_id": "clip-one", "uri": str(uri), "start_frame": 0, "end_frame": 12,
           "fps": 16.0, "caption": CAPTION, "subject_words": ["man"],
           "faces": [{"identity_id": "id0", "label": "man", "ref": encode_png(frames[0][:16, :16]),
                      "source_id": "f0"}], "objects": [], "provenance": "{}"}
    path = folder / "samples.parquet"
    write_table(pa.Table.from_pylist([row], schema=schema_for("samples")), str(path), "samples")
    return path


def eq6_share(base: str, weights: Path, table: Path, data: DataConfig) -> dict[str, list[float]]:
    """Per block: ||Eq. 6 term|| / ||z_0|| over the subject's tokens and over all of z_0."""
    pipe = load("video_backbone", base, device="cpu")
    state = load_file(str(weights))
    pipe.load_magref_checkpoint(str(weights))
    example = make_example(SamplesTable(str(table)).row(0), 0, data, pipe.tokenizer)
    inputs = encode_examples(pipe, [example])
    x0 = torch.randn(inputs.latents.shape, generator=torch.Generator().manual_seed(0))
    sigma = 0.5
    noisy = (1 - sigma) * inputs.latents + sigma * x0
    before: list[torch.Tensor] = []
    after: list[torch.Tensor] = []
    hooks = []
    for block in pipe.transformer.blocks:  # torch pre-hooks run before diffusers' (Eq. 6) hook
        hooks.append(block.register_forward_pre_hook(lambda m, a, kw: before.append(
            (a[0] if a else kw["hidden_states"]).clone()), with_kwargs=True))
        hooks.append(block.norm1.register_forward_hook(lambda m, a, o: after.append(a[0].clone())))
    with torch.no_grad():
        magref_velocity(pipe.transformer, pipe.disentangler, noisy, inputs.condition,
                        torch.tensor([sigma * 1000.0]), inputs.prompt_embeds, inputs.image_embeds,
                        inputs.guidance)
    for h in hooks:
        h.remove()
    masks = inputs.guidance.token_masks[0].amax(0) > 0
    n0 = masks.numel()
    subject, frame0 = [], []
    for b, a in zip(before, after):
        delta, z0 = (a - b)[0, :n0], b[0, :n0]
        subject.append(float(delta[masks].norm() / z0[masks].norm()))
        frame0.append(float(delta.norm() / z0.norm()))
    return {"alpha": [float(v) for v in state["magref.alpha"]], "share_subject_tokens": subject,
            "share_z0": frame0}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--base", default="tiny")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more model.train options")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out or tempfile.mkdtemp(prefix="alpha-"))
    out.mkdir(parents=True, exist_ok=True)
    table = samples(out)
    data = DataConfig(num_frames=9, min_frames=5, buckets=((32, 32),), augmentations=1)
    cache_samples(str(table), load_encoders(args.base, "cpu"), str(out / "cache"), data, args.base)
    run = out / "run"
    assert train_main(["--cache", str(out / "cache"), "--base", args.base, "--out", str(run),
                       "--steps", str(args.steps), "--checkpoint-every", str(args.every),
                       "--keep-checkpoints", "0", "--no-gradient-checkpointing", "--data-workers", "0",
                       *args.extra]) == 0
    trajectory = {0: [0.0]}
    for ckpt in sorted((run / "checkpoints").iterdir()):
        step = int(ckpt.name.split("-")[-1])
        trajectory[step] = [round(float(v), 6) for v in load_file(str(ckpt / "model.safetensors"))["magref.alpha"]]
    share = eq6_share(args.base, run / "model.safetensors", table, data)
    print(json.dumps({"base": args.base, "steps": args.steps, "alpha_by_step": trajectory, **share}, indent=1))


if __name__ == "__main__":
    main()

"""``python -m model.train`` end to end on tiny models, CPU: resume, bad records, LoRA, overfitting."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from training_data import CAPTION, clip, png, sample_row, samples_table, small_wan_dir, write_samples

from model.train.loop import main

# The overfit test's default-settings run, and how far its largest alpha must get (measured:
# README "Optimiser and schedule").
DEFAULT_RUN_STEPS = 100
ALPHA_THRESHOLD = 0.02
SMALL = ["--frames", "9", "--min-frames", "5", "--bucket", "64x48", "--bucket", "48x64"]


@pytest.fixture(autouse=True)
def one_thread():
    """Two torch threads per process on two shared cores thrash (6x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return samples_table(tmp_path_factory.mktemp("samples"), count=2, frames=16)


def losses(out: Path) -> list[tuple[str, str]]:
    with (out / "loss.csv").open() as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def grouped_table(tmp_path_factory) -> Path:
    """4 samples in 2 parts of row groups of 1: the streamed reader's row-group order."""
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("grouped")
    rows = pq.read_table(samples_table(root, count=4, frames=16))
    (root / "samples").mkdir()
    for n in range(2):
        pq.write_table(rows.slice(2 * n, 2), root / "samples" / f"part-{n}.parquet", row_group_size=1)
    return root / "samples"


@pytest.mark.parametrize("mode", ["full", "lora", "row-groups"])
def test_resume_is_exact(mode: str, table: Path, grouped_table: Path, tmp_path: Path, capsys) -> None:
    """6 steps straight == 3 steps + resume + 3 steps: same losses, same weights, same CSV.

    Global batch 2 as 2 micro-batches of 1 (gradient accumulation), a cosine restart every
    4 steps (the resume lands inside a cycle, the restart comes after it), 2 decode threads.
    LoRA checkpoints hold only adapters + alphas; the frozen base comes from --base again.
    ``row-groups``: a table of many row groups, read streamed (the order deals row groups).
    """
    table = grouped_table if mode == "row-groups" else table
    extra = ["--lora-rank", "4", "--lr", "1e-2"] if mode == "lora" else ["--lr", "1e-3"]
    weights = "lora.safetensors" if mode == "lora" else "model.safetensors"
    args = ["--manifest", str(table), "--base", "tiny", "--batch-size", "2", *extra,
            "--micro-batch", "1", "--restart-steps", "4", "--data-workers", "2", *SMALL]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(args + ["--out", str(straight), "--steps", "6"]) == 0
    assert main(args + ["--out", str(resumed), "--steps", "3", "--checkpoint-every", "3"]) == 0
    # Continuing without --resume would mix two runs in one folder: refused.
    assert main(args + ["--out", str(resumed), "--steps", "6"]) == 2
    assert "--resume auto" in capsys.readouterr().err
    assert main(args + ["--out", str(resumed), "--steps", "6", "--resume", "auto"]) == 0
    assert losses(straight) == losses(resumed) and len(losses(resumed)) == 6
    a, b = load_file(str(straight / weights)), load_file(str(resumed / weights))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    steps = sorted(p.name for p in (resumed / "checkpoints").iterdir())
    assert steps == ["step-00000003", "step-00000006"]
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["first_step"] == 3 and summary["last_step"] == 6
    assert (resumed / "loss.png").stat().st_size > 1000


def test_resume_refuses_changed_hyperparameters(table: Path, tmp_path: Path, capsys) -> None:
    args = ["--manifest", str(table), "--base", "tiny", "--out", str(tmp_path / "o"), *SMALL]
    assert main(args + ["--steps", "1"]) == 0
    assert main(args + ["--steps", "2", "--resume", "auto", "--lr", "1e-3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "options differ" in err and "optim" in err


def test_a_table_with_broken_records_trains_on_and_reports_them(tmp_path: Path, capsys) -> None:
    uri, frames = clip(tmp_path / "c.mp4", frames=16)
    folder = tmp_path / "samples"
    rows = [sample_row("good", str(uri), frames),
            sample_row("no-video", str(tmp_path / "missing.mp4"), frames),
            sample_row("bad-png", str(uri), frames, background=False)]
    rows[2]["faces"][0]["ref"] = rows[2]["faces"][0]["variant"] = b"not a png"
    write_samples(folder / "part-0.parquet", rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"sample_id": ["wrong"], "caption": [3]}), folder / "part-1.parquet")
    out = tmp_path / "out"
    assert main(["--manifest", str(folder), "--base", "tiny", "--out", str(out), "--steps", "4",
                 "--variant-prob", "0", *SMALL]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == {"missing_video": 1, "unreadable_image": 1}
    err = capsys.readouterr().err
    assert "skipped part" in err and "part-1.parquet" in err
    assert "sample no-video" in err and "skipped records" in err
    assert len(losses(out)) == 4


def test_lora_trains_only_adapters_and_alphas_and_loads_in_sample(table: Path, tmp_path: Path) -> None:
    from model.disentangle import SubjectDisentanglement
    from model.sample import main as sample_main
    from model.tiny import tiny_wan_components
    from model.train.trainable import MagrefModel
    from model.weights.lora import load_lora

    out = tmp_path / "lora"
    trained: list[MagrefModel] = []
    from model.train.config import config_from_args
    from model.train.loop import train

    config = config_from_args(["--manifest", str(table), "--base", "tiny", "--out", str(out),
                               "--steps", "3", "--lr", "1e-2", "--lora-rank", "4", *SMALL])
    train(config, on_end=trained.append)
    model = trained[0]
    base = tiny_wan_components()["transformer"].state_dict()
    changed = []
    for name, value in model.transformer.state_dict().items():
        if "lora_" in name:
            continue
        plain = name.replace(".base_layer", "")
        assert torch.equal(value, base[plain]), f"frozen weight {plain} changed"
    for name, value in model.transformer.named_parameters():
        if "lora_B" in name:
            changed.append(bool(value.abs().sum() > 0))  # B starts at 0
    assert changed and all(changed)
    assert model.disentangler.alpha.abs().sum() > 0
    lora_file = out / "lora.safetensors"
    assert lora_file.stat().st_size < 200_000
    # The saved adapter reproduces the trained model's velocity exactly.
    fresh = tiny_wan_components()["transformer"]
    disentangler = SubjectDisentanglement.attach_to(fresh)
    counts = load_lora(str(lora_file), fresh, disentangler)
    assert counts["alpha"] == 1 and counts["lora_tensors"] > 0
    loaded = MagrefModel(fresh, disentangler).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 3, 6, 8, generator=g)
    cond = torch.randn(1, 20, 3, 6, 8, generator=g)
    text = torch.randn(1, 512, 32, generator=g)
    image = torch.randn(1, 17, 16, generator=g)
    weights = torch.zeros(1, 1, 512)
    weights[0, 0, 3] = 1.0
    masks = torch.ones(1, 1, 12)
    with torch.no_grad():
        args = (x, cond, torch.tensor([500.0]), text, image, weights, masks)
        torch.testing.assert_close(loaded(*args), model.eval()(*args), rtol=0, atol=0)
    # model.sample --lora loads it (and the adapter changes the video).
    ref = tmp_path / "ref.png"
    ref.write_bytes(png(np.full((24, 24, 3), 200, np.uint8)))
    common = ["--base", "tiny", "--device", "cpu", "--ref", str(ref), "--prompt", CAPTION,
              "--subject", "man=ref.png", "--height", "48", "--width", "64", "--frames", "5",
              "--steps", "2", "--guidance", "1", "--drop-first", "0"]
    assert sample_main(common + ["--out", str(tmp_path / "with.mp4"), "--lora", str(lora_file)]) == 0
    assert sample_main(common + ["--out", str(tmp_path / "without.mp4")]) == 0
    assert (tmp_path / "with.mp4").read_bytes() != (tmp_path / "without.mp4").read_bytes()


@pytest.mark.slow
def test_overfitting_one_sample_then_sampling_reproduces_it(tmp_path: Path) -> None:
    """300 steps on one clip (from the latent cache) cut the loss >= 5x, and ``model.sample``
    with the checkpoint lands much nearer the clip than the untrained model does.

    The tiny VAE is random, so "the clip" is measured where the model works: the sampled
    latents against the clip's latents, and the decoded video against the VAE's decoding
    of the clip's latents (what a perfect model would produce through this VAE).
    """
    from curation.models import load
    from model.sample import main as sample_main
    from model.train.data import DataConfig, make_example
    from model.train.samples_reader import SamplesTable
    from model.train.latent_cache import cache_samples
    from model.train.latents import encode_examples, load_encoders

    base = small_wan_dir(tmp_path / "wan")
    uri, frames = clip(tmp_path / "one.mp4", frames=12, height=32, width=32, fps=16, seed=3)
    ref = tmp_path / "ref.png"
    ref.write_bytes(png(frames[0]))
    row = sample_row("one", str(uri), frames, fps=16.0, variant=False, background=False, objects=[])
    row["faces"][0]["ref"] = png(frames[0])
    table = write_samples(tmp_path / "one.parquet", [row])
    data = DataConfig(num_frames=9, min_frames=5, buckets=((32, 32),), augmentations=1)
    encoders = load_encoders(str(base), "cpu")  # VAE, UMT5, CLIP; the transformer stays unloaded
    assert encoders.transformer.device.type == "meta"
    assert cache_samples(str(table), encoders, str(tmp_path / "cache"), data, str(base))["entries"] == 1
    out = tmp_path / "out"
    assert main(["--cache", str(tmp_path / "cache"), "--base", str(base), "--out", str(out),
                 "--steps", "300", "--lr", "3e-3", "--restart-steps", "300",
                 "--no-gradient-checkpointing", "--checkpoint-every", "300", "--data-workers", "0"]) == 0
    loss = [float(v) for _, v in losses(out)]
    assert np.mean(loss[:20]) / np.mean(loss[-20:]) >= 5.0

    pipe = load("video_backbone", str(base), device="cpu")
    example = make_example(SamplesTable(str(table)).row(0), 0, data, pipe.tokenizer)
    x1 = encode_examples(pipe, [example]).latents              # latent frame 0: the canvas
    target = pipe.decode(x1).astype(np.float32)[4:]             # the frames after the dropped 4
    size = dict(height=32, width=32, num_frames=9, num_inference_steps=20, guidance_scale=1.0,
                drop_first=0, output_type="latent")
    latent_mse = {}
    for name in ("untrained", "trained"):
        if name == "trained":
            pipe.load_magref_checkpoint(str(out / "model.safetensors"))  # what --checkpoint does
        sampled = pipe([example.canvas.image], CAPTION, subjects=[("man", 0)], **size).latents
        latent_mse[name] = float(((sampled[:, :, 1:] - x1[:, :, 1:]) ** 2).mean())  # the clip's frames
    assert latent_mse["trained"] < latent_mse["untrained"] / 10, latent_mse
    common = ["--base", str(base), "--device", "cpu", "--ref", str(ref), "--prompt", CAPTION,
              "--subject", "man=ref.png", "--height", "32", "--width", "32", "--frames", "9",
              "--steps", "20", "--guidance", "1", "--drop-first", "4", "--fps", "16"]
    pixel_mse = {}
    for name, extra in (("trained", ["--checkpoint", str(out / "model.safetensors")]), ("untrained", [])):
        video = tmp_path / f"{name}.mp4"
        assert sample_main(common + extra + ["--out", str(video)]) == 0
        import av

        with av.open(str(video)) as container:
            got = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.float32)
        pixel_mse[name] = float(np.mean((got - target) ** 2))
    # A random VAE decoder squeezes differences, and H.264 adds its own: a smaller margin.
    print(f"overfit: loss x{np.mean(loss[:20]) / np.mean(loss[-20:]):.1f} down; latent MSE {latent_mse}; "
          f"pixel MSE {pixel_mse}")
    assert pixel_mse["trained"] < 0.8 * pixel_mse["untrained"], pixel_mse
    # At the defaults (the paper's backbone lr 1e-5, the alphas' own rate, restarts every
    # quarter run) the Eq. 6 alphas leave zero: at alpha-lr = lr they stayed below 1e-3.
    default = tmp_path / "default"
    assert main(["--cache", str(tmp_path / "cache"), "--base", str(base), "--out", str(default),
                 "--steps", str(DEFAULT_RUN_STEPS), "--no-gradient-checkpointing",
                 "--checkpoint-every", "1000", "--data-workers", "0"]) == 0
    alpha = json.loads((default / "summary.json").read_text())["alpha"]
    rows = list(csv.DictReader((default / "loss.csv").open()))
    assert float(rows[-1]["alpha_max_abs"]) == pytest.approx(max(abs(a) for a in alpha), rel=1e-4)
    print(f"alphas after {DEFAULT_RUN_STEPS} default steps: {alpha}")
    assert max(abs(a) for a in alpha) >= ALPHA_THRESHOLD, alpha


def test_a_bucket_the_transformer_cannot_hold_is_refused_before_training(table: Path, tmp_path: Path,
                                                                        capsys) -> None:
    """tiny's rotary table holds 512 px a side; the default 832x480 bucket does not fit."""
    assert main(["--manifest", str(table), "--base", "tiny", "--out", str(tmp_path / "o"), "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert ": error: --bucket 832x480" in err and "rope_max_seq_len" in err
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_benchmark_runs_on_tiny(tmp_path: Path) -> None:
    """benchmarks/train_step.py runs the loop's own step (so it cannot rot unnoticed)."""
    import subprocess
    import sys

    from conftest import ROOT

    result = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "benchmarks/train_step.py", "--arch", "tiny", "--steps", "1",
                           "--warmup", "0", "--modes", "lora", "--rank", "2", "--json", str(result)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(result.read_text())
    assert [(r["mode"], r["cache"]) for r in rows] == [("lora r2", False), ("lora r2", True)]
    assert all(r["s_per_step"] > 0 for r in rows) and "cached step / uncached step" in proc.stdout

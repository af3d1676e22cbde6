"""The latent cache: the Ray job (resume, errors, settings) and training from it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from training_data import clip, sample_row, write_samples

# The data options are model.train's own flags (one vocabulary); the rest are the job's config keys.
SETTINGS = ["--frames", "9", "--min-frames", "5", "--bucket", "64x48", "--augmentations", "2",
            "--set", "encode.dtype=float32",
            "--set", "decode.pool.num_cpus=0.5", "--set", "encode.pool.num_cpus=0.5"]
TRAIN = ["--base", "tiny", "--steps", "4", "--lr", "1e-3", "--batch-size", "2", "--micro-batch", "1",
         "--data-workers", "0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, ray_session) -> Path:
    """A run directory with 2 good samples and one whose video is gone, cached once."""
    from pipelines.cache_latents import main

    root = tmp_path_factory.mktemp("cache_run")
    rows = []
    for i in range(2):
        uri, frames = clip(root / f"clip{i}.mp4", frames=16, seed=i)
        rows.append(sample_row(f"s{i}", str(uri), frames))
    rows.append(sample_row("gone", str(root / "missing.mp4"), frames))
    (root / "samples").mkdir()
    write_samples(root / "samples" / "part-0.parquet", rows)
    assert main(["--run-dir", str(root), "--base", "tiny", *SETTINGS]) == 0
    return root


def test_cache_job_writes_entries_index_and_errors(run: Path) -> None:
    from model.tiny import tiny_components
    from model.train.data import DataConfig, make_example
    from model.train.samples_reader import SamplesTable
    from model.train.latent_cache import open_cache
    from model.train.latents import encode_examples, read_entry
    from schemas.io import Location, read_table

    meta, dataset = open_cache(str(run))
    assert meta["data"]["augmentations"] == 2 and meta["dtype"] == "float32"
    assert dataset.keys() == [("s0", 0), ("s0", 1), ("s1", 0), ("s1", 1)]
    errors = read_table(Location.of(str(run)).join("errors"), "errors").to_pylist()
    assert [(e["stage"], e["input"]) for e in errors] == [("latents", "gone")]
    assert "missing.mp4" in errors[0]["message"]
    # An entry holds exactly what online training computes for that (sample, augmentation).
    pipe = tiny_components("cpu")
    data = DataConfig(num_frames=9, min_frames=5, buckets=((64, 48),), augmentations=2)
    table = SamplesTable(str(run / "samples"))
    row = table.row(table.index_of("s1"))
    online = encode_examples(pipe, [make_example(row, 1, data, pipe.tokenizer)])
    cached = read_entry(str(run), dataset.path_of(1, 1))
    for name in ("latents", "condition", "prompt_embeds", "image_embeds"):
        torch.testing.assert_close(getattr(cached, name), getattr(online, name), rtol=0, atol=1e-6)
    torch.testing.assert_close(cached.guidance.token_weights, online.guidance.token_weights)
    torch.testing.assert_close(cached.guidance.token_masks, online.guidance.token_masks)


def test_cache_job_resumes_and_refuses_other_settings(run: Path, capsys) -> None:
    from pipelines.cache_latents import main

    before = sorted(p.name for p in (run / "latents").iterdir())
    assert main(["--run-dir", str(run), "--base", "tiny", *SETTINGS]) == 0
    assert "3 already done" in capsys.readouterr().out
    assert sorted(p.name for p in (run / "latents").iterdir()) == before
    changed = ["3" if i and SETTINGS[i - 1] == "--augmentations" else s for i, s in enumerate(SETTINGS)]
    from pipelines.cli import cli

    assert cli(main, ["--run-dir", str(run), "--base", "tiny", *changed]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0] and "data" in err[0]


def test_training_from_the_cache_equals_training_from_raw_samples(run: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:
    """Same seeds, same 4 steps: the losses agree to 1e-6 relative (float32 cache; a bf16
    cache rounds latents to 3 significant digits; its losses agreed to ~1e-4 here)."""
    import curation.models
    from model.train.loop import main

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        raw = tmp_path / "raw"
        assert main(["--manifest", str(run / "samples"), *TRAIN, "--frames", "9", "--min-frames", "5",
                     "--bucket", "64x48", "--augmentations", "2", "--out", str(raw)]) == 0

        def no_encoders(*args, **kwargs):
            raise AssertionError("a cached run must not load VAE / UMT5 / CLIP")

        monkeypatch.setattr(curation.models, "load", no_encoders)
        cached = tmp_path / "cached"
        assert main(["--cache", str(run), *TRAIN, "--out", str(cached)]) == 0
    finally:
        torch.set_num_threads(before)

    def losses(out: Path) -> list[float]:
        with (out / "loss.csv").open() as f:
            return [float(r["loss"]) for r in csv.DictReader(f)]

    assert len(losses(raw)) == 4
    assert losses(cached) == pytest.approx(losses(raw), rel=1e-6)

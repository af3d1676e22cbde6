"""MagrefPipeline and ``python -m model.sample`` on tiny components, CPU."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from model.sample import main

H, W = 32, 48


def save_ref(path: Path, w: int, h: int, seed: int, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    channels = 4 if mode == "RGBA" else 3
    Image.fromarray(rng.integers(0, 255, (h, w, channels), dtype=np.uint8), mode).save(path)
    return path


def read_video(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return len(frames), frames[0].shape[0], frames[0].shape[1]


def observe(monkeypatch) -> dict:
    """Wrap ``model.sample.load_pipeline`` (the real one) to record what reaches the models:
    CLIP's pixel values, the transformer's timesteps, and the Eq. 6 guidance it runs with."""
    import model.sample as sample

    seen: dict = {"pixels": [], "timesteps": [], "guidance": []}
    real = sample.load_pipeline

    def load_and_watch(args):
        pipe = real(args)
        pipe.image_encoder.register_forward_pre_hook(
            lambda m, a, kw: seen["pixels"].append(kw["pixel_values"].clone()), with_kwargs=True)

        def transformer_input(m, a, kw):
            seen["timesteps"].append(float(kw["timestep"].flatten()[0]))
            seen["guidance"].append(pipe.disentangler.guidance)

        pipe.transformer.register_forward_pre_hook(transformer_input, with_kwargs=True)
        seen["pipe"] = pipe
        return pipe

    monkeypatch.setattr(sample, "load_pipeline", load_and_watch)
    return seen


@pytest.fixture()
def refs(tmp_path: Path) -> list[Path]:
    return [save_ref(tmp_path / "a.png", 30, 40, 0), save_ref(tmp_path / "b.png", 20, 20, 1, "RGBA")]


def test_magref_equals_wan_i2v_for_one_full_frame_reference() -> None:
    """alpha=0, one reference filling the canvas, diffusers' CLIP crop and timestep grid:
    MAGREF's sampler is Wan I2V's sampler (so diffusers' behaviour stays one flag away)."""
    from diffusers import WanImageToVideoPipeline

    from model.pipeline import MagrefPipeline
    from model.tiny import tiny_wan_components

    image = Image.fromarray(np.random.default_rng(5).integers(0, 255, (H, W, 3), dtype=np.uint8))
    kwargs = dict(prompt="a man walks a dog", negative_prompt="worst quality", height=H, width=W,
                  num_frames=5, num_inference_steps=3, guidance_scale=4.0, output_type="latent")
    wan = WanImageToVideoPipeline(**tiny_wan_components())
    theirs = wan(image=image, generator=torch.Generator().manual_seed(11), **kwargs).frames
    magref = MagrefPipeline.from_components(tiny_wan_components())
    ours = magref([image], subjects=[("man", 0)], generator=torch.Generator().manual_seed(11),
                  seed=None, drop_first=0, flow_shift=None, clip_input="crop",
                  timestep_grid="diffusers", **kwargs).latents
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    release = magref([image], generator=torch.Generator().manual_seed(11), seed=None,
                     drop_first=0, flow_shift=None, **kwargs).latents
    assert (release - theirs).abs().max() > 1e-3  # the release's defaults do differ


def test_registry_tiny_and_loader_from_a_diffusers_directory(tmp_path: Path) -> None:
    from diffusers import WanImageToVideoPipeline

    from curation.models import load
    from model.pipeline import MagrefPipeline, load_components
    from model.tiny import tiny_wan_components

    assert isinstance(load("video_backbone", "tiny", device="cpu"), MagrefPipeline)
    comps = tiny_wan_components()
    WanImageToVideoPipeline(**comps).save_pretrained(tmp_path / "wan")
    pipe = load_components(str(tmp_path / "wan"), device="cpu")
    assert pipe.disentangler.alpha.numel() == len(pipe.transformer.blocks)
    for a, b in zip(comps["transformer"].state_dict().values(), pipe.transformer.state_dict().values()):
        assert torch.equal(a, b)
    out = pipe([Image.new("RGB", (20, 30), (9, 90, 200))], "a dog", height=H, width=W,
               num_frames=5, num_inference_steps=2, drop_first=1)
    assert out.frames.shape == (4, H, W, 3) and out.frames.dtype == np.uint8


def test_sample_cli_writes_playable_mp4_and_canvas(refs: list[Path], tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out" / "video.mp4"
    seen = observe(monkeypatch)
    rc = main(["--base", "tiny", "--device", "cpu", "--ref", str(refs[0]), "--ref", str(refs[1]),
               "--prompt", "a man walks a dog", "--subject", "man=a.png", "--subject", f"dog={refs[1]}",
               "--height", str(H), "--width", str(W), "--frames", "9", "--steps", "2",
               "--out", str(out)])
    assert rc == 0
    assert read_video(out) == (9 - 4, H, W)  # the release's default drops 4 frames
    canvas = Image.open(out.with_name("video.canvas.png"))
    assert canvas.size == (W, H)
    # --subject man=a.png / dog=b.png reached the transformer as Eq. 6 guidance: each word's
    # tokens, each on its own reference's cell of the canvas (a.png's pixels for "man").
    guided = [g for g in seen["guidance"] if g is not None]
    assert guided and guided[0].token_weights.shape[:2] == (1, 2)
    assert bool((guided[0].token_weights[0].sum(-1) > 0.99).all())
    from model.conditioning import compose_canvas
    from model.sample import read_image

    placed = compose_canvas([read_image(r) for r in refs], H, W)  # the CLI's canvas (no shuffle)
    assert np.array_equal(np.asarray(canvas), np.asarray(placed.image))
    for k in (0, 1):  # word k -> reference k's cell, pooled to 16x16 tokens here
        cell = placed.subject_masks[k].reshape(H // 16, 16, W // 16, 16).any(axis=(1, 3)).reshape(-1)
        assert np.array_equal(guided[0].token_masks[0, k].numpy() > 0, cell)
    assert not torch.equal(guided[0].token_masks[0, 0], guided[0].token_masks[0, 1])
    rc = main(["--base", "tiny", "--device", "cpu", "--ref", str(refs[0]), "--prompt", "a man",
               "--height", str(H), "--width", str(W), "--frames", "5", "--steps", "1",
               "--drop-first", "0", "--out", str(out)])
    assert rc == 0 and read_video(out) == (5, H, W)


def test_sample_module_entry_point(refs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "m.mp4"
    proc = subprocess.run([sys.executable, "-m", "model.sample", "--base", "tiny", "--device", "cpu",
                           "--ref", str(refs[0]), "--prompt", "a girl", "--height", "16",
                           "--width", "16", "--frames", "5", "--steps", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert read_video(out) == (1, 16, 16)
    assert "1/1" in proc.stderr  # the step progress bar


@pytest.mark.parametrize("case,message", [
    ("missing", "does not exist"),
    ("unreadable", "cannot read reference image"),
    ("too_many", "at most 8"),
    ("bad_size", "not divisible by 16"),
    ("bad_frames", "4k\\+1"),
    ("absent_word", "'cat' does not occur"),
    ("bad_subject_ref", "names no --ref"),
])
def test_sample_cli_errors(case: str, message: str, refs: list[Path], tmp_path: Path, capsys) -> None:
    import re

    args = ["--base", "tiny", "--device", "cpu", "--prompt", "a man", "--height", str(H),
            "--width", str(W), "--frames", "5", "--steps", "1", "--out", str(tmp_path / "x.mp4")]
    refs_args = ["--ref", str(refs[0])]
    if case == "missing":
        refs_args = ["--ref", str(tmp_path / "nope.png")]
    elif case == "unreadable":
        (tmp_path / "junk.png").write_bytes(b"not a png at all")
        refs_args = ["--ref", str(tmp_path / "junk.png")]
    elif case == "too_many":
        refs_args = sum((["--ref", str(refs[0])] for _ in range(9)), [])
    elif case == "bad_size":
        args[args.index("--height") + 1] = "33"
    elif case == "bad_frames":
        args[args.index("--frames") + 1] = "6"
    elif case == "absent_word":
        refs_args += ["--subject", "cat=a.png"]
    elif case == "bad_subject_ref":
        refs_args += ["--subject", "man=zzz.png"]
    assert main(args + refs_args) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "x.mp4").exists()


def test_prompt_file_batch_runs_good_lines_reports_bad_and_resumes(refs: list[Path], tmp_path: Path,
                                                                   capsys) -> None:
    lines = [
        "one@@a man walks a dog@@man=a.png@@dog=b.png",
        "two@@a girl on a beach@@b.png",
        "bad@@a cat@@missing.png",
        "",
    ]
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("\n".join(lines))
    args = ["--base", "tiny", "--device", "cpu", "--prompt-file", str(prompt_file), "--out-dir",
            str(tmp_path / "batch"), "--height", str(H), "--width", str(W), "--frames", "5",
            "--steps", "1", "--drop-first", "0"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "failed bad" in err and "missing.png" in err
    for key in ("one", "two"):
        assert read_video(tmp_path / "batch" / f"{key}.mp4") == (5, H, W)
        assert (tmp_path / "batch" / f"{key}.canvas.png").exists()
    before = (tmp_path / "batch" / "one.mp4").stat().st_mtime_ns
    main(args)
    assert "0 written, 2 already there" in capsys.readouterr().out
    assert (tmp_path / "batch" / "one.mp4").stat().st_mtime_ns == before


def test_samples_table_batch(refs: list[Path], tmp_path: Path) -> None:
    """A table of the real ``samples`` schema: faces + objects + background -> refs, labels -> words."""
    import pyarrow as pa

    from schemas import schema_for, write_table
    from schemas.samples import sample_references

    png = [r.read_bytes() for r in refs]
    base = {"clip_id": "c", "uri": "/v.mp4", "start_frame": 0, "end_frame": 48, "fps": 24.0,
            "provenance": "{}"}
    rows = [
        {**base, "sample_id": "s1", "caption": "a man and a dog", "subject_words": ["man", "dog"],
         "faces": [{"identity_id": "i0", "label": "man", "ref": png[0], "variant": None, "source_id": "f0"}],
         "objects": [{"label": "dog", "ref": png[1], "variant": png[0], "source_id": "o0"}],
         "background": None},
        {**base, "sample_id": "s2", "caption": "a dog", "subject_words": ["dog"], "faces": [],
         "objects": [{"label": "cat", "ref": png[1], "variant": None, "source_id": "o1"}], "background": png[0]},
        {**base, "sample_id": "s3", "caption": "nothing", "subject_words": [], "faces": [], "objects": [],
         "background": None},
    ]
    # Columns a test leaves out (provenance ids, variant sources) are null, as the schema allows.
    write_table(pa.Table.from_pylist(rows, schema=schema_for("samples")), str(tmp_path / "samples.parquet"), "samples")
    found = sample_references(rows[0], use_variants=True)
    assert [(r.word, r.kind, r.image) for r in found] == [("man", "face", png[0]), ("dog", "object", png[0])]
    assert [r.kind for r in sample_references(rows[1])] == ["object", "background"]

    rc = main(["--base", "tiny", "--device", "cpu", "--manifest", str(tmp_path / "samples.parquet"),
               "--out-dir", str(tmp_path / "s"), "--height", str(H), "--width", str(W),
               "--frames", "5", "--steps", "1", "--drop-first", "0"])
    assert rc == 1  # s3 has no reference: reported, the others still made
    assert read_video(tmp_path / "s" / "s1.mp4") == (5, H, W)
    assert read_video(tmp_path / "s" / "s2.mp4") == (5, H, W)  # 'cat' is not in its caption: no subject
    assert not (tmp_path / "s" / "s3.mp4").exists()
    buf = io.BytesIO()
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"sample_id": ["x"]}), buf)
    (tmp_path / "bad.parquet").write_bytes(buf.getvalue())
    assert main(["--base", "tiny", "--manifest", str(tmp_path / "bad.parquet")]) == 2


def test_low_memory_mode_runs_the_same_code_path_with_offload_hooks() -> None:
    """Model CPU offload + VAE tiling/slicing (device 'cpu' here; 'cuda' on a GPU)."""
    from model.tiny import tiny_components

    pipe = tiny_components("cpu")
    image = [Image.new("RGB", (20, 30), (9, 90, 200))]
    kwargs = dict(subjects=[("man", 0)], height=H, width=W, num_frames=5, num_inference_steps=2,
                  drop_first=0)
    plain = pipe(image, "a man", **kwargs).frames
    pipe.enable_low_memory("cpu")
    assert getattr(pipe.transformer, "_hf_hook", None) is not None
    assert pipe.vae.use_tiling and pipe.vae.use_slicing
    low = pipe(image, "a man", **kwargs).frames
    assert low.shape == plain.shape == (5, H, W, 3)
    assert np.abs(low.astype(int) - plain.astype(int)).max() <= 2  # tiling may move a level


def test_sample_tiny_with_only_ref_prompt_out_writes_a_video(refs: list[Path], tmp_path: Path) -> None:
    """No sizes given: the tiny preset's own (its rotary table cannot hold 832x480)."""
    from model.tiny import TINY_DEFAULTS as t

    out = tmp_path / "plain.mp4"
    assert main(["--base", "tiny", "--ref", str(refs[0]), "--prompt", "a man", "--out", str(out)]) == 0
    assert read_video(out) == (t.num_frames - t.drop_first, t.height, t.width)


def write_release_prompt_file(root: Path, refs: list[Path]) -> tuple[Path, list[str]]:
    """The release's layout: images under assets/imgs/, a prompt file in assets/ whose paths
    are relative to the repository root (the directory the release's command runs in)."""
    for demo in ("demo_1", "demo_2"):
        (root / "assets" / "imgs" / demo).mkdir(parents=True)
    Image.open(refs[0]).save(root / "assets/imgs/demo_1/1.png")
    Image.open(refs[1]).save(root / "assets/imgs/demo_1/2.png")
    Image.open(refs[0]).convert("RGB").save(root / "assets/imgs/demo_2/1.jpeg")
    lines = [
        "demo_1@@Two people take a selfie.@@assets/imgs/demo_1/1.png@@assets/imgs/demo_1/2.png",
        "demo_2@@A man walks, the camera is static. @@ assets/imgs/demo_2/1.jpeg @@",
        "demo_3@@A man and a dog, x=1 in the air.@@assets/imgs/demo_2/1.jpeg@@assets/imgs/demo_1/2.png"
        "@@assets/imgs/demo_1/1.png",
    ]
    prompt_file = root / "assets" / "multi_id.txt"
    prompt_file.write_text("\n".join(lines) + "\n")
    return prompt_file, ["demo_1", "demo_2", "demo_3"]


def test_release_prompt_file_paths_relative_to_the_working_directory(refs: list[Path], tmp_path: Path,
                                                                     monkeypatch, capsys) -> None:
    root = tmp_path / "MAGREF"
    prompt_file, keys = write_release_prompt_file(root, refs)
    monkeypatch.chdir(root)
    opts = ["--base", "tiny", "--device", "cpu", "--height", str(H), "--width", str(W),
            "--frames", "5", "--steps", "1", "--drop-first", "0"]
    assert main(opts + ["--prompt-file", "assets/multi_id.txt", "--out-dir", str(tmp_path / "out")]) == 0
    assert "3 written" in capsys.readouterr().out
    for key in keys:
        assert read_video(tmp_path / "out" / f"{key}.mp4") == (5, H, W)
    # Run from elsewhere, paths are also tried from the file's folder (here they are not
    # relative to it, so each line fails naming both places it looked).
    monkeypatch.chdir(tmp_path)
    assert main(opts + ["--prompt-file", str(prompt_file), "--out-dir", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert err.count("does not exist (looked for") == 3 and str(root / "assets" / "assets") in err


def test_prompt_file_paths_relative_to_the_file_still_run(refs: list[Path], tmp_path: Path,
                                                          monkeypatch) -> None:
    folder = tmp_path / "prompts"
    (folder / "imgs").mkdir(parents=True)
    Image.open(refs[0]).save(folder / "imgs" / "a.png")
    Image.open(refs[1]).save(folder / "imgs" / "b.png")
    (folder / "p.txt").write_text("one@@a man walks a dog@@man=imgs/a.png@@dog=imgs/b.png\n")
    monkeypatch.chdir(tmp_path)  # not the file's folder
    assert main(["--base", "tiny", "--device", "cpu", "--prompt-file", str(folder / "p.txt"),
                 "--out-dir", str(tmp_path / "out"), "--height", str(H), "--width", str(W),
                 "--frames", "5", "--steps", "1"]) == 0
    assert (tmp_path / "out" / "one.mp4").exists()


def test_sample_cli_release_options(refs: list[Path], tmp_path: Path, monkeypatch) -> None:
    """--shuffle-refs SEED reproduces the canvas; --clip-input crop gives CLIP the processor's
    centre crop instead of the squashed canvas; --timesteps diffusers uses the scheduler's grid."""
    from model.conditioning import compose_canvas
    from model.sample import read_image

    seen = observe(monkeypatch)
    images = [read_image(r) for r in refs]
    base = ["--base", "tiny", "--device", "cpu", "--ref", str(refs[0]), "--ref", str(refs[1]),
            "--ref", str(refs[0]), "--prompt", "a man", "--frames", "5", "--steps", "3",
            "--height", str(H), "--width", str(W), "--guidance", "1"]
    runs = []
    for n, extra in enumerate((["--shuffle-refs", "5"], ["--clip-input", "crop", "--timesteps", "diffusers"])):
        seen["pixels"].clear()
        seen["timesteps"].clear()
        out = tmp_path / f"v{n}.mp4"
        assert main(base + extra + ["--out", str(out)]) == 0
        canvas = np.asarray(Image.open(out.with_name(f"v{n}.canvas.png")))
        rng = np.random.default_rng(5) if n == 0 else None
        expected = compose_canvas([images[0], images[1], images[0]], H, W, rng=rng)
        assert np.array_equal(canvas, np.asarray(expected.image))
        runs.append((expected.image, seen["pixels"][0], list(seen["timesteps"])))
    pipe = seen["pipe"]
    (canvas0, squash, release), (canvas1, crop, grid) = runs
    processor = pipe.image_processor(images=canvas1, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(crop, processor)                       # diffusers' crop
    size = pipe.image_encoder.config.image_size
    squashed = torch.nn.functional.interpolate(
        torch.from_numpy(np.asarray(canvas0, np.float32) / 127.5 - 1).permute(2, 0, 1)[None],
        size=(size, size), mode="bicubic", align_corners=False)
    mean = torch.tensor(pipe.image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(pipe.image_processor.image_std).view(1, 3, 1, 1)
    torch.testing.assert_close(squash, ((squashed + 1) / 2 - mean) / std, atol=1e-5, rtol=1e-5)
    assert len(release) == len(grid) == 3 and release != grid
    fresh = type(pipe.scheduler).from_config(pipe.scheduler.config)
    fresh.set_timesteps(3)
    assert grid == [float(t) for t in fresh.timesteps]

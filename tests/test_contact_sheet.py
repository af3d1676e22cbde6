"""The contact sheet renders in headless Chromium; ``--sample`` prints one record."""

import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import ROOT
from pairs_data import clip_row, face_row, object_row, people, table

from curation.pairs.assemble import AssembleConfig, assemble_sample
from curation.synthetic import moving_video
from pipelines.cli import cli
from pipelines.contact_sheet import highlight
from pipelines.inspect_run import main as inspect_main
from pipelines.ledger import RunDir
from schemas.ids import background_id, variant_id
from schemas.io import write_part

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with samples, dropped clips/objects/faces, a too-masked background and errors."""
    root = tmp_path_factory.mktemp("sheet") / "run"
    video = moving_video(root.parent / "media" / "moving.mp4", seconds=2)
    run = RunDir.of(str(root))
    clips, objects, faces, pairs, samples = [], [], [], [], []
    for n, caption in enumerate(["A man throws a ball <b>fast</b>", "a dog runs", "a man waves", "a cup"]):
        clip = clip_row(start=12 * n, end=12 * n + 12, caption=caption, uri=str(video), width=256, height=144)
        clips.append(clip)
        objs = [object_row(clip, 0, "ball" if n == 0 else "dog", (10, 10, 30, 30), 0.8),
                object_row(clip, 1, "speck", (0, 0, 3, 3), 0.4, status="too_small")]
        fcs = [face_row(clip, 0, f"{clip['clip_id']}-i000", people(1)[0]),
               face_row(clip, 1, None, people(1)[0], selected=False, status="blur")]
        prs = [{"pair_id": variant_id(o["object_id"]), "clip_id": clip["clip_id"], "kind": "object",
                "source_id": o["object_id"], "image": o["ref"], "status": "kept"} for o in objs[:1]]
        prs += [{"pair_id": variant_id(fcs[0]["face_id"]), "clip_id": clip["clip_id"], "kind": "face",
                 "source_id": fcs[0]["face_id"], "image": fcs[0]["crop"], "status": "kept"}]
        prs.append({"pair_id": background_id(clip["clip_id"]), "clip_id": clip["clip_id"], "kind": "background",
                    "source_id": clip["clip_id"], "image": None if n == 3 else objs[0]["mask"],
                    "mask": objs[0]["mask"], "status": "too_masked" if n == 3 else "kept"})
        objects += objs
        faces += fcs
        pairs += prs
        samples.append(assemble_sample(clip, fcs, objs, prs, {}, AssembleConfig()))
    clips.append(clip_row(start=100, end=110, uri=str(video), status="motion", caption=None))
    for kind, rows in (("clips", clips), ("objects", objects), ("faces", faces), ("pairs", pairs),
                       ("samples", samples)):
        write_part(table(kind, rows), run.table(kind), kind, name=kind)
    import datetime

    errors = [{"stage": "faces", "input": "broken-clip", "error_type": "IncompleteVideoError",
               "message": "x.mp4: frames did not decode", "traceback": None,
               "time": datetime.datetime.now(datetime.timezone.utc)}]
    write_part(table("errors", errors), run.table("errors"), "errors", name="e")
    cross = [{"pair_id": "a~b", "identity_a": "a", "clip_a": clips[0]["clip_id"], "identity_b": "b",
              "clip_b": clips[2]["clip_id"], "similarity": 0.97, "status": "near_duplicate"}]
    write_part(table("cross_pairs", cross), run.table("cross_pairs"), "cross_pairs", name="x")
    return root, samples


def test_caption_words_are_highlighted_and_escaped():
    out = highlight("A Man & his dogs; a man<b>", ["man", "dogs"])
    assert out == "A <mark>Man</mark> &amp; his <mark>dogs</mark>; a <mark>man</mark>&lt;b&gt;"
    assert highlight("a dog", []) == "a dog"


def test_html_has_a_card_per_sample_and_the_dropped_reasons(run_dir, tmp_path, capsys):
    root, samples = run_dir
    out = tmp_path / "sheet.html"
    assert inspect_main([str(root), "--html", str(out)]) == 0
    text = out.read_text()
    assert text.count('class="sample-card"') == len(samples) == 4
    for reason in ("motion", "too_small", "blur", "too_masked", "near_duplicate", "faces: IncompleteVideoError"):
        assert reason in text
    assert "http://" not in text.replace("http://www.w3.org", "") and "<b>fast</b>" not in text  # self-contained, escaped
    assert len(re.findall(r'src="data:image/jpeg', text)) >= 4 * 6  # a strip of frames per sample


def test_contact_sheet_renders_in_headless_chromium(run_dir, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "Debian's chromium is needed (apt-get install chromium; .ci/run installs it)"
    root, samples = run_dir
    out = tmp_path / "sheet.html"
    assert inspect_main([str(root), "--html", str(out)]) == 0
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    counts = dict(re.findall(r'data-([a-z-]+)="(\d+)"', body))
    assert int(counts["cards-rendered"]) == len(samples)
    assert int(counts["images-broken"]) == 0 and int(counts["images-decoded"]) > 4 * 6
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "contact_sheet.png"
    shot.unlink(missing_ok=True)
    result = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}",
                             "--window-size=1280,1600", f"--screenshot={shot}", out.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 1600)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # not a blank page


def test_sample_prints_one_record_and_unknown_ids_are_a_user_error(run_dir, capsys):
    root, samples = run_dir
    assert inspect_main([str(root), "--sample", samples[0]["sample_id"]]) == 0
    out = capsys.readouterr().out
    assert samples[0]["sample_id"] in out and "caption    A man throws a ball" in out
    assert re.search(r"object +ball +ref \d+x\d+ PNG from \S+-o000; variant 48x48 PNG \(generated: \S+-o000-v000\)", out)
    assert re.search(r"face +man +ref \d+x\d+ PNG", out)
    capsys.readouterr()
    assert cli(inspect_main, [str(root), "--sample", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no sample 'nope'" in err and "Traceback" not in err


def test_samples_at_a_glance(run_dir, tmp_path):
    from pipelines.inspect_run import render_samples

    root, samples = run_dir
    text = render_samples(RunDir.of(str(root)))
    lines = text.splitlines()
    assert lines[0] == f"samples: 4 rows in {root / 'samples'}"
    for sample in samples:
        line = next(l for l in lines if sample["sample_id"] in l)
        words = ", ".join(sample["subject_words"])
        assert "generated 2" in line and line.rstrip().endswith(words or "generated 2")
        assert (" yes " if sample["background"] else " no ") in line
    assert render_samples(RunDir.of(str(root)), limit=2).splitlines()[-2] == "  ... 2 more"
    assert render_samples(RunDir.of(str(tmp_path / "none"))).startswith("samples: none yet")

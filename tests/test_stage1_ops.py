"""Stage 1 operators on generated media: decode, scenes, motion/aesthetic, captions."""

from __future__ import annotations

import re
import struct

import cv2
import numpy as np
import pyarrow as pa
import pytest

from curation import synthetic
from curation.clips.caption import (
    CaptionConfig,
    Captioner,
    chat_prompt,
    frame_request,
    split_subjects,
    tiny_tokenizer,
)
from curation.clips.quality import ClipScorer, QualityConfig
from curation.clips.scenes import ClipPolicy, ScenesConfig
from curation.clips.shots import Boundary
from curation.clips.splitter import ClipSplitter
from curation.decode import IncompleteVideoError
from curation.envelope import to_table
from curation.frames import FRAMES, FrameReader, at_frames, decode_frames, read_clip_frames
from schemas.tables import CLIPS, ERROR, KEPT

FPS = synthetic.FPS


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stage1_media")
    made = {
        # scenes: 0-80, 80-110 (1.25 s: too short), 110-200, 200-520 (13.3 s: windowed)
        "cuts": synthetic.cuts_video(folder / "cuts.mp4", cuts=[80, 110, 200], num_frames=520),
        "static": synthetic.static_video(folder / "static.mp4", seconds=3),
        "moving": synthetic.moving_video(folder / "moving.mp4", seconds=3),
    }
    big = list(synthetic.scene_frames(72, [], height=288, width=512, moving=True, seed=3))
    made["moving_hi"] = synthetic.write_video(folder / "moving_hi.mp4", big)
    made["moving_lo"] = synthetic.write_video(
        folder / "moving_lo.mp4", [cv2.resize(f, (192, 108), interpolation=cv2.INTER_AREA) for f in big])
    made["broken"] = partly_decodable(folder)
    return made


def partly_decodable(folder):
    """A valid mp4 whose mdat's second half is overwritten with noise (the moov index stays
    intact): it opens and probes fine, ~115 frames decode, then decoding fails."""
    whole = synthetic.cuts_video(folder / "whole.mp4", cuts=[100], num_frames=240)
    data = bytearray(whole.read_bytes())
    offset = 0
    while True:  # walk the top-level atoms to the media data
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"mdat":
            break
        offset += size
    start, end = offset + 8 + (size - 8) // 2, offset + size
    data[start:end] = np.random.default_rng(0).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    (folder / "broken.mp4").write_bytes(bytes(data))
    return folder / "broken.mp4"


def videos_table(*rows):
    return pa.table({"uri": [str(r[0]) for r in rows], "video_id": [r[1] for r in rows]})


# ----------------------------------------------------------------------------- decode


def test_partly_decodable_video_really_fails_mid_decode(media):
    # Seeking, scaling and frame choice are tested against full decodes in test_frames.py.
    with pytest.raises(IncompleteVideoError, match="decoding failed after") as failed:
        read_clip_frames(str(media["broken"]), 0, 240, 0.0, 240 / FPS, at_frames(range(240), short_side=36))
    stopped = float(re.search(r"after ([0-9.]+) s", str(failed.value)).group(1))
    assert 50 / FPS < stopped < 239 / FPS  # the first frames did decode


# ----------------------------------------------------------------------------- scenes


def test_clip_policy():
    def whole_video(cuts: list[int], num_frames: int, config: ScenesConfig) -> list[tuple[int, int, str]]:
        """The policy fed all of a video's hard cuts at once, as the scan feeds it at its end."""
        policy = ClipPolicy(config, 24.0)
        return policy.add([Boundary(c, c, "cut") for c in cuts], num_frames) + policy.finish(num_frames)

    cfg = ScenesConfig(min_seconds=2, max_seconds=10, trim_frames=2)
    ranges = whole_video([100, 130], 700, cfg)
    assert ranges == [(0, 98, KEPT), (102, 128, "too_short"), (132, 372, KEPT), (372, 612, KEPT), (612, 700, KEPT)]
    # even: full windows while more than two remain, then the rest halved (none under half a window)
    even = whole_video([], 600, ScenesConfig(window="even"))
    assert even == [(0, 240, KEPT), (240, 420, KEPT), (420, 600, KEPT)]
    assert whole_video([10, 11], 100, cfg)[1:] == [(13, 100, KEPT)]  # a 1-frame flash leaves no row
    with pytest.raises(ValueError, match="detector"):
        ScenesConfig(detector="histogram")
    with pytest.raises(ValueError, match="classical"):
        ScenesConfig(classical=["threshold"])


@pytest.mark.parametrize("detectors", [["adaptive"], ["content"], ["gradual"], ["adaptive", "gradual"]])
def test_cuts_give_clip_boundaries(media, detectors):
    cfg = ScenesConfig(detector="classical", classical=detectors, content_threshold=15.0)
    out = ClipSplitter(cfg)(videos_table((media["cuts"], "v")))
    rows = out.to_pylist()
    cuts, min_len, max_len = [80, 110, 200], 2 * FPS, 10 * FPS
    for cut in cuts:
        assert min(abs(r["end_frame"] - cut) for r in rows) <= 2
        assert min(abs(r["start_frame"] - cut) for r in rows) <= 2
        assert not any(r["start_frame"] < cut < r["end_frame"] for r in rows)  # none crosses a cut
    kept = [r for r in rows if r["status"] == KEPT]
    assert all(min_len <= r["end_frame"] - r["start_frame"] <= max_len for r in kept)
    assert [r for r in rows if r["status"] == "too_short"][0]["start_frame"] in range(80, 84)
    long_scene = [r for r in kept if r["start_frame"] >= 200]
    assert len(long_scene) == 2 and long_scene[0]["end_frame"] == long_scene[1]["start_frame"]
    assert rows[0]["clip_id"].startswith("v-") and rows[0]["start_s"] == 0.0
    assert rows[-1]["end_s"] == pytest.approx(rows[-1]["end_frame"] / FPS)


def test_failing_video_is_one_error_row_others_intact(media):
    out = ClipSplitter(ScenesConfig(), QualityConfig())(videos_table((media["moving"], "m"), (media["broken"], "b")))
    by_input = {}
    for row in out.to_pylist():
        by_input.setdefault(row["_input"], []).append(row)
    assert [r["status"] for r in by_input["b"]] == [ERROR]
    assert "broken.mp4" in by_input["b"][0]["_error_message"]
    assert [(r["start_frame"], r["end_frame"]) for r in by_input["m"]] == [(0, 72)]


# ----------------------------------------------------------------------------- quality


@pytest.fixture(scope="module")
def scorer():
    return ClipScorer(QualityConfig(), models="tiny", device="cpu")


def test_motion_filter_and_resolution_independence(media, scorer):
    table = videos_table(*((media[k], k) for k in ("static", "moving", "moving_hi", "moving_lo")))
    out = scorer(ClipSplitter(ScenesConfig(), QualityConfig())(table))
    assert "_frames" not in out.column_names
    rows = {r["_input"]: r for r in out.to_pylist()}
    assert rows["static"]["status"] == "motion" and rows["static"]["motion"] < 0.1
    assert rows["moving"]["status"] == KEPT and rows["moving"]["motion"] > QualityConfig().motion_min
    hi, lo = rows["moving_hi"]["motion"], rows["moving_lo"]["motion"]
    assert hi > 0.3 and abs(hi - lo) / hi < 0.1
    for row in rows.values():  # filtered or not, every scored clip keeps both scores
        assert row["motion"] is not None and row["aesthetic"] is not None
    strict = ClipScorer(QualityConfig(aesthetic_min=9.0), models="tiny", device="cpu")
    again = strict(ClipSplitter(ScenesConfig(), QualityConfig())(videos_table((media["moving"], "m"))))
    assert again.column("status").to_pylist() == ["aesthetic"]


def test_aesthetic_loader_reads_safetensors_head(tmp_path):
    """The real loader path, offline: a saved CLIP folder + a .pth head converted to safetensors."""
    import torch

    from curation.clips.quality import HEAD_FILE, convert_head, load_aesthetic, tiny_aesthetic

    tiny = tiny_aesthetic("cpu")
    tiny.vision.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    torch.save(tiny.head.state_dict(), tmp_path / "head.pth")
    convert_head(str(tmp_path / "head.pth"), str(tmp_path / HEAD_FILE))
    loaded = load_aesthetic(str(tmp_path), "cpu")
    images = [np.random.default_rng(i).integers(0, 256, (224, 300, 3), dtype=np.uint8) for i in range(2)]
    assert np.allclose(loaded.score(images), tiny.score(images), atol=1e-5)


# ----------------------------------------------------------------------------- captions


def clip_rows(media, count):
    rows = []
    for i in range(count):
        start = 5 * i
        rows.append({"clip_id": f"c{i}", "video_id": f"v{i % 2}", "uri": str(media["moving" if i % 2 else "cuts"]),
                     "start_frame": start, "end_frame": start + 48, "start_s": start / FPS,
                     "end_s": (start + 48) / FPS, "fps": float(FPS), "width": 256, "height": 144,
                     "status": KEPT, "_input": f"v{i % 2}"})
    return rows


def with_frames(config, table):
    """The CPU frames step the job puts in front of the captioner."""
    return FrameReader(frame_request(config), schema=CLIPS)(table)


def test_captions_batched_end_to_end(media):
    config = CaptionConfig(frames=4, max_new_tokens=10)
    captioner = Captioner(config, models="tiny", device="cpu")
    rows = clip_rows(media, 3)
    rows.append({**rows[0], "clip_id": "f", "status": "motion"})  # filtered: passes through uncaptioned
    decoded = with_frames(config, to_table(rows, CLIPS))
    assert decoded.column(FRAMES).null_count == 1  # only the filtered clip has no frames
    # The captioner reads the frames column and never decodes: with every uri broken it still works.
    decoded = decoded.set_column(decoded.column_names.index("uri"), "uri", pa.array(["/nope.mp4"] * 4))
    out = captioner(decoded)
    assert captioner.generate_calls == 1  # three live clips, one generate call
    assert FRAMES not in out.column_names
    got = {r["clip_id"]: r for r in out.to_pylist()}
    for cid in ("c0", "c1", "c2"):
        assert got[cid]["caption"] and isinstance(got[cid]["subjects"], list)
    assert got["f"]["caption"] is None and got["f"]["subjects"] is None
    # Left padding is right: a clip captioned in a batch reads the same as alone.
    alone = Captioner(config, models="tiny", device="cpu")
    assert alone(with_frames(config, to_table(rows[1:2], CLIPS))).column("caption").to_pylist() == \
        [got["c1"]["caption"]]


def test_frames_that_do_not_decode_settle_the_whole_video(media):
    config = CaptionConfig(frames=4, max_new_tokens=4)
    rows = clip_rows(media, 4)
    rows[2] = {**rows[2], "uri": str(media["broken"]), "start_frame": 180, "end_frame": 230,
               "start_s": 180 / FPS, "end_s": 230 / FPS}  # video v0 fails here
    rows.append({**rows[0], "clip_id": "short", "status": "too_short"})
    out = Captioner(config, models="tiny", device="cpu")(with_frames(config, to_table(rows, CLIPS))).to_pylist()
    v0 = [r for r in out if r["_input"] == "v0"]
    assert len(v0) == 1 and v0[0]["status"] == ERROR and v0[0]["_error_type"] == "IncompleteVideoError"
    assert "broken.mp4" in v0[0]["_error_message"]
    assert sorted(r["clip_id"] for r in out if r["_input"] == "v1") == ["c1", "c3"]
    assert all(r["caption"] for r in out if r["_input"] == "v1")


def test_a_generate_failure_is_isolated_to_its_video(media, monkeypatch):
    config = CaptionConfig(frames=4, max_new_tokens=4)
    captioner = Captioner(config, models="tiny", device="cpu")
    decoded = with_frames(config, to_table(clip_rows(media, 4), CLIPS))
    real = captioner.generate
    poisoned = decode_frames(decoded.column(FRAMES)[2].as_py()).images.shape  # clip c2 (video v0)

    def generate(videos):
        if any(v.shape[1:] == poisoned[1:] and (v == with_frames_images(decoded, 2)).all() for v, _ in videos):
            raise RuntimeError("CUDA error: one bad clip")
        return real(videos)

    monkeypatch.setattr(captioner, "generate", generate)
    out = captioner(decoded).to_pylist()
    v0 = [r for r in out if r["_input"] == "v0"]
    assert len(v0) == 1 and v0[0]["status"] == ERROR and "one bad clip" in v0[0]["_error_message"]
    assert sorted(r["clip_id"] for r in out if r["_input"] == "v1" and r["caption"]) == ["c1", "c3"]


def with_frames_images(decoded, row):
    return decode_frames(decoded.column(FRAMES)[row].as_py()).images


def test_subject_parsing_never_crashes():
    assert split_subjects("A dog runs.\nSubjects: The dog, a red ball and  man.", 8) == \
        ("A dog runs.", ["dog", "red ball", "man"])
    assert split_subjects("**Subjects:** cat; 42; <|x|>", 8) == ("", ["cat"])
    assert split_subjects("gragra\x00\ufffd subjects", 8) == ("gragra\x00\ufffd subjects", [])
    assert split_subjects("", 3) == ("", [])
    assert split_subjects("Subjects: a, b c, dd, ee, ff", 2)[1] == ["b c", "dd"]


def test_chat_prompt_is_qwens_format_through_the_tokenizers_template():
    tokenizer = tiny_tokenizer()
    assert chat_prompt(tokenizer, "Describe.", video_tokens=3) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|video_pad|><|video_pad|><|vision_end|>Describe.<|im_end|>\n"
        "<|im_start|>assistant\n")
    assert chat_prompt(tokenizer, "Labels?") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nLabels?<|im_end|>\n"
        "<|im_start|>assistant\n")
    tokenizer.chat_template = "{% for m in messages %}[{{ m['role'] }}]{% endfor %}"  # the model's own, whatever it is
    assert chat_prompt(tokenizer, "x") == "[user]"


def test_captioner_loader_reads_a_saved_checkpoint(media, tmp_path):
    """The real loader path (from_pretrained + AutoTokenizer), offline, on a saved tiny model."""
    from curation.clips.caption import tiny_captioner

    tiny = tiny_captioner("cpu")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    config = CaptionConfig(frames=4, max_new_tokens=6)
    from_tiny = Captioner(config, models="tiny", device="cpu")
    from_disk = Captioner(config, models={"captioner": str(tmp_path), "aesthetic": "tiny"}, device="cpu")
    assert from_disk.captioner.tokenizer.padding_side == "left"
    assert from_disk.captioner.tokenizer.chat_template == from_tiny.captioner.tokenizer.chat_template  # saved with it
    table = with_frames(config, to_table(clip_rows(media, 1), CLIPS))
    assert from_disk(table).column("caption").to_pylist() == from_tiny(table).column("caption").to_pylist()

"""Videos with non-UTF-8 metadata open everywhere; the training reader applies a clip's crop."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from curation import synthetic
from curation.decode import decode_all
from curation.frames import read_clip_frames, uniform
from curation.video import probe_video
from model.train.data import BadRecord, DataConfig, read_clip


@pytest.fixture(scope="module")
def legacy(tmp_path_factory) -> str:
    return str(synthetic.legacy_handler_video(tmp_path_factory.mktemp("legacy") / "quicktime.mp4", seconds=1.0))


def test_a_legacy_code_page_handler_name_probes_and_decodes(legacy: str, tmp_path: Path) -> None:
    with pytest.raises(UnicodeDecodeError):  # the fixture really has the bytes strict PyAV refuses
        av.open(legacy)
    plain = probe_video(str(synthetic.moving_video(tmp_path / "plain.mp4", seconds=1.0)))
    row = probe_video(legacy)
    same = ("fps", "num_frames", "width", "height", "codec", "pix_fmt", "has_audio", "duration_s")
    assert {k: row[k] for k in same} == {k: plain[k] for k in same}
    assert decode_all(legacy) == row["num_frames"]
    clip = read_clip_frames(legacy, 0, row["num_frames"], 0.0, row["duration_s"], uniform(3))
    assert len(clip) == 3
    frames = read_clip(legacy, 0, row["num_frames"], row["fps"], DataConfig(num_frames=5, min_frames=5, fps=8.0,
                       buckets=((64, 48),)), np.random.default_rng(0), "s")
    assert frames.shape == (5, 48, 64, 3)


def _halves(path: Path) -> str:
    """Left half red, right half blue (a 'watermark' band of green on top)."""
    image = np.zeros((96, 128, 3), np.uint8)
    image[:, :64] = (220, 20, 20)
    image[:, 64:] = (20, 20, 220)
    image[:16] = (20, 220, 20)
    return str(synthetic.write_video(path, [image] * 12, fps=12))


def test_the_training_reader_keeps_only_the_crop(tmp_path: Path) -> None:
    uri = _halves(tmp_path / "halves.mp4")
    config = DataConfig(num_frames=5, min_frames=5, fps=12.0, buckets=((32, 48), (64, 48)))
    whole = read_clip(uri, 0, 12, 12.0, config, np.random.default_rng(0), "s")
    assert whole.shape[1:3] == (48, 64)  # 4:3 frame -> the 4:3 bucket
    crop = [72.0, 24.0, 48.0, 64.0]  # x, y, w, h: inside the blue half, below the green band
    frames = read_clip(uri, 0, 12, 12.0, config, np.random.default_rng(0), "s", crop=crop)
    assert frames.shape[1:3] == (48, 32)  # 3:4 crop -> the portrait bucket
    mean = frames.reshape(-1, 3).mean(axis=0)
    assert mean[2] > 180 and mean[0] < 50 and mean[1] < 50, mean  # all blue: nothing of red or green
    with pytest.raises(BadRecord) as info:
        read_clip(uri, 0, 12, 12.0, config, np.random.default_rng(0), "s", crop=[100, 0, 64, 64])
    assert info.value.reason == "bad_crop"

"""The frames contract: policies choose the right frames, the reader returns them exactly."""

from __future__ import annotations

import av
import numpy as np
import pyarrow as pa
import pytest

from curation import synthetic
from curation.decode import IncompleteVideoError
from curation.envelope import to_table
from curation.frames import (
    FRAMES,
    ClipFrames,
    FrameReader,
    at_frames,
    at_times,
    decode_frame_sets,
    decode_frames,
    encode_frames,
    every,
    read_clip_frames,
    read_range_frames,
    uniform,
)
from schemas.tables import CLIPS, ERROR, KEPT

SIZE = (64, 48)
VFR_MS = [40, 40, 20, 60, 33, 100, 10, 40, 25, 75] * 5  # 50 frames, 2.215 s, irregular


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    return {
        "cfr": str(synthetic.cuts_video(folder / "cfr.mp4", cuts=[30, 70], num_frames=100, height=96, width=128)),
        "vfr": str(synthetic.vfr_video(folder / "vfr.mp4", VFR_MS)),
    }


def full_decode(uri: str, size=SIZE) -> tuple[list[float], list[np.ndarray]]:
    """Every frame and its pts, straight from PyAV: the ground truth the reader must match."""
    times, images = [], []
    with av.open(uri) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            times.append(float((frame.pts - (stream.start_time or 0)) * stream.time_base))
            images.append(frame.to_ndarray(width=size[0], height=size[1], format="rgb24"))
    return times, images


def on_screen(times: list[float], first: int, last: int, t: float) -> int:
    """The frame a viewer sees at time t: the last one whose pts is <= t (within the clip)."""
    return max(n for n in range(first, last) if times[n] <= t + 1e-9)


def check(got: ClipFrames, expected: list[int], times, images) -> None:
    assert got.indices.tolist() == expected
    assert np.allclose(got.times, [times[n] for n in expected])
    assert got.images.shape == (len(expected), SIZE[1], SIZE[0], 3)
    for image, n in zip(got.images, expected):
        assert np.array_equal(image, images[n]), f"frame {n} differs from a full decode"


@pytest.mark.parametrize("kind", ["cfr", "vfr"])
@pytest.mark.parametrize("first, last", [(0, 20), (23, 41), (35, 50)])
def test_each_policy_returns_exactly_the_frames_of_a_full_decode(videos, kind, first, last):
    uri = videos[kind]
    times, images = full_decode(uri)
    start_s = times[first]
    end_s = times[last] if last < len(times) else times[-1] + 0.04

    def read(request):
        return read_clip_frames(uri, first, last, start_s, end_s, request)

    wanted = sorted({int(round(x)) for x in np.linspace(first, last - 1, 5)})
    check(read(uniform(5, size=SIZE)), wanted, times, images)

    period = 0.13
    targets = [start_s + k * period for k in range(100) if start_s + k * period < end_s - 1e-4]
    expected = sorted({on_screen(times, first, last, t) for t in targets})
    check(read(every(period, size=SIZE)), expected, times, images)

    asked = [start_s + 0.011, (start_s + end_s) / 2, end_s - 0.002]
    expected = sorted({on_screen(times, first, last, t) for t in asked})
    check(read(at_times(asked, size=SIZE)), expected, times, images)

    numbers = [last - 1, first, (first + last) // 2]
    check(read(at_frames(numbers, size=SIZE)), sorted(set(numbers)), times, images)
    with pytest.raises(ValueError, match="outside the clip"):
        read(at_frames([last], size=SIZE))


def test_vfr_times_are_presentation_times_not_counts(videos):
    """On the VFR video, counting frames at the average rate lands on the wrong frames."""
    uri = videos["vfr"]
    times, images = full_decode(uri)
    got = read_clip_frames(uri, 0, len(times), 0.0, times[-1] + 0.05, at_times([0.1, 0.5, 1.0], size=SIZE))
    expected = [on_screen(times, 0, len(times), t) for t in (0.1, 0.5, 1.0)]
    check(got, expected, times, images)
    average_rate = len(times) / (times[-1] + 0.05)
    assert [int(0.5 * average_rate), int(1.0 * average_rate)] != expected[1:]  # the test can tell


def test_range_reads_for_neighbour_margins(videos):
    uri = videos["vfr"]
    times, images = full_decode(uri)
    got = read_range_frames(uri, 0.5, 1.2, every(0.2, size=SIZE))
    # Only frames whose pts lie in the range count; a target before the first of them gets it.
    first = min(n for n, t in enumerate(times) if t >= 0.5)
    last = max(n for n, t in enumerate(times) if t < 1.2) + 1
    expected = sorted({max(first, on_screen(times, 0, last, t)) for t in (0.5, 0.7, 0.9, 1.1)})
    assert times[first] > 0.5  # the range starts between two frames: the case the rule is for
    assert [float(t) for t in got.times] == pytest.approx([times[n] for n in expected])
    for image, n in zip(got.images, expected):
        assert np.array_equal(image, images[n])


def test_output_sizes(videos):
    uri = videos["cfr"]
    assert read_clip_frames(uri, 0, 10, 0, 10 / 24, uniform(2, short_side=48)).images.shape[1:] == (48, 64, 3)
    odd = read_clip_frames(uri, 0, 10, 0, 10 / 24, uniform(2, size=lambda w, h: (w // 4 * 2, h // 4 * 2)))
    assert odd.images.shape[1:] == (48, 64, 3)
    assert read_clip_frames(uri, 0, 10, 0, 10 / 24, uniform(1, format="gray")).images.shape == (1, 96, 128)


def test_a_clip_past_the_end_names_the_file(videos):
    with pytest.raises(IncompleteVideoError, match="cfr.mp4"):
        read_clip_frames(videos["cfr"], 90, 140, 90 / 24, 140 / 24, uniform(5))
    with pytest.raises(ValueError, match="outside the range"):
        read_clip_frames(videos["cfr"], 0, 10, 0, 10 / 24, at_times([3.0]))


def test_the_frames_column_round_trips_named_sets():
    one = ClipFrames(np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3), np.array([3, 9]), np.array([0.125, 0.375]))
    grey = ClipFrames(np.zeros((1, 4, 4), np.uint8), np.array([1]), np.array([0.04]))
    back = decode_frames(encode_frames(one))
    assert np.array_equal(back.images, one.images) and back.indices.tolist() == [3, 9]
    sets = decode_frame_sets(encode_frames({"motion": grey, "aesthetic": one}))
    assert set(sets) == {"motion", "aesthetic"} and sets["motion"].images.shape == (1, 4, 4)
    with pytest.raises(KeyError, match="no frame set 'frames'"):
        decode_frames(encode_frames({"motion": grey}))


def test_frame_reader_fills_live_rows_and_settles_a_broken_clip(videos, tmp_path):
    def clip(cid, video, uri, start, end, status=KEPT):
        return {"clip_id": cid, "video_id": video, "uri": uri, "start_frame": start, "end_frame": end,
                "start_s": start / 24, "end_s": end / 24, "fps": 24.0, "status": status, "_input": cid}

    missing = str(tmp_path / "gone.mp4")
    rows = [clip("a", "v", videos["cfr"], 0, 24), clip("b", "v", videos["cfr"], 40, 60, status="motion"),
            clip("c", "w", missing, 0, 24), clip("d", "v", videos["cfr"], 72, 96)]
    out = {r["_input"]: r for r in FrameReader(uniform(3, size=SIZE), schema=CLIPS)(to_table(rows, CLIPS)).to_pylist()}
    assert len(decode_frames(out["a"][FRAMES])) == 3 and len(decode_frames(out["d"][FRAMES])) == 3
    assert out["b"][FRAMES] is None and out["b"]["status"] == "motion"  # filtered rows are not decoded
    assert out["c"]["status"] == ERROR and "gone.mp4" in out["c"]["_error_message"]
    assert isinstance(pa.table({"x": [out["a"][FRAMES]]}).column("x").type, pa.DataType)

"""model.train.data and model.train.batching: samples rows -> examples -> deterministic batches."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from training_data import CAPTION, clip, sample_row, samples_table, write_samples

from model.train.batching import BatchStream, NoUsableSamples, StreamState, epoch_order
from model.train.data import (
    BadRecord,
    DataConfig,
    SamplesDataset,
    cover_size,
    frame_count,
    make_example,
    nearest_bucket,
    window_times,
)
from model.train.samples_reader import SamplesTable

SMALL = DataConfig(num_frames=9, min_frames=5, buckets=((64, 48), (48, 64)))


@pytest.fixture(scope="module")
def tokenizer():
    from model.tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="module")
def one_clip(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    return clip(tmp_path_factory.mktemp("clip") / "c.mp4", frames=24)


def shown(times, source_fps: float) -> list[int]:
    """The frame on screen at each time on a constant-rate source."""
    return [int(np.floor(t * source_fps + 1e-6)) for t in times]


def test_frame_timing_resamples_to_the_training_fps() -> None:
    # A 13-frame range at 24 fps holds exactly 9 frames at 16 fps (0.5 s): no room to slide.
    times = window_times(13, 24.0, 16.0, 9, np.random.default_rng(0))
    assert shown(times, 24.0) == [int(np.floor(i * 1.5)) for i in range(9)] == [0, 1, 3, 4, 6, 7, 9, 10, 12]
    # With room, the window slides (seeded) but keeps its spacing and stays inside the range.
    slid = {tuple(shown(window_times(30, 24.0, 16.0, 9, np.random.default_rng(s)), 24.0)) for s in range(5)}
    assert len(slid) > 1 and all(0 <= i[0] and i[-1] < 30 for i in slid)
    # The count is the largest 4k+1 the range holds; a slower source repeats frames.
    assert frame_count(24, 24.0, 16.0, 81) == 13 and frame_count(100, 8.0, 16.0, 81) == 81
    assert frame_count(3, 24.0, 16.0, 81) == 1 and frame_count(7, 8.0, 16.0, 81) == 13
    assert shown(window_times(7, 8.0, 16.0, 13, np.random.default_rng(0)), 8.0) == \
        [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6]


def test_a_slower_source_repeats_its_frames(tokenizer, tmp_path: Path) -> None:
    from dataclasses import replace

    uri, frames = clip(tmp_path / "slow.mp4", frames=7, fps=8)
    example = make_example(sample_row("s", str(uri), frames, fps=8.0), 0,
                           replace(SMALL, num_frames=13, first_frame="clip"), tokenizer)
    got = example.frames
    assert got.shape[0] == 13
    for i in range(6):
        assert np.array_equal(got[2 * i], got[2 * i + 1])
        assert np.abs(got[2 * i].astype(int) - frames[i].astype(int)).mean() < 6


def test_buckets_pick_the_nearest_aspect_and_cover_it() -> None:
    buckets = ((832, 480), (480, 832), (624, 624))
    assert nearest_bucket(1920, 1080, buckets) == (832, 480)
    assert nearest_bucket(1080, 1920, buckets) == (480, 832)
    assert nearest_bucket(1000, 1100, buckets) == (624, 624)
    w, h = cover_size(1920, 1080, (832, 480))
    assert w >= 832 and h >= 480 and w % 2 == 0 and h % 2 == 0 and abs(w / h - 16 / 9) < 0.01


def test_example_shapes_and_pixels_follow_the_clip(tokenizer, tmp_path: Path) -> None:
    uri, frames = clip(tmp_path / "13.mp4", frames=13)  # 13 frames at 24 fps = 9 at 16 fps exactly
    row = sample_row("a", str(uri), frames)
    example = make_example(row, 0, SMALL, tokenizer)
    assert example.frames.shape == (9, 48, 64, 3) and example.frames.dtype == np.uint8
    assert example.bucket == (64, 48, 9)
    assert example.canvas.image.size == (64, 48)
    # Frame 0 of the target is the canvas (as the release was trained); the others are the
    # clip's frames at the chosen source indices (lossy codec).
    assert np.array_equal(example.frames[0], np.asarray(example.canvas.image))
    for got, i in zip(example.frames[1:], [1, 3, 4, 6, 7, 9, 10, 12]):
        assert np.abs(got.astype(int) - frames[i].astype(int)).mean() < 6
    own = make_example(row, 0, replace(SMALL, first_frame="clip"), tokenizer)
    assert np.abs(own.frames[0].astype(int) - frames[0].astype(int)).mean() < 6
    assert np.array_equal(own.frames[1:], example.frames[1:])
    assert example.prompt == CAPTION
    assert [w for w, _ in example.subjects] == ["man", "dog"]
    g = example.guidance
    assert g is not None and g.token_weights.shape == (1, 2, 512)
    assert np.allclose(g.token_weights.sum(-1).numpy(), 1.0)  # each word averages its tokens
    assert g.token_masks.shape == (1, 2, (48 // 16) * (64 // 16))


def test_same_sample_and_augmentation_is_the_same_example(one_clip, tokenizer) -> None:
    uri, frames = one_clip
    row = sample_row("a", str(uri), frames, end_frame=24)
    a, b = make_example(row, 3, SMALL, tokenizer), make_example(row, 3, SMALL, tokenizer)
    assert np.array_equal(a.frames, b.frames) and a.canvas.boxes == b.canvas.boxes
    assert np.array_equal(np.asarray(a.canvas.image), np.asarray(b.canvas.image))
    layouts = {tuple(make_example(row, k, SMALL, tokenizer).canvas.boxes) for k in range(8)}
    assert len(layouts) > 1  # the shuffle moves references between augmentations


def test_variant_and_background_probabilities(one_clip, tokenizer) -> None:
    from dataclasses import replace

    uri, frames = one_clip
    row = sample_row("a", str(uri), frames)
    face_ref, face_var = row["faces"][0]["ref"], row["faces"][0]["variant"]

    def face_pixels(config, aug):
        ex = make_example(row, aug, replace(config, shuffle_refs=False), tokenizer)
        x, y, w, h = ex.canvas.boxes[0]
        return np.asarray(ex.canvas.image)[y:y + h, x:x + w], len(ex.canvas.boxes)

    import io

    from PIL import Image

    def placed(data, size):
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize(size, Image.LANCZOS))

    cfg = replace(SMALL, variant_prob=1.0, background_prob=0.0)
    pixels, count = face_pixels(cfg, 0)
    assert count == 2  # no background
    assert np.array_equal(pixels, placed(face_var, pixels.shape[1::-1]))
    cfg = replace(SMALL, variant_prob=0.0, background_prob=1.0)
    pixels, count = face_pixels(cfg, 0)
    assert count == 3 and np.array_equal(pixels, placed(face_ref, pixels.shape[1::-1]))
    half = replace(SMALL, variant_prob=0.5)
    picks = {bool(np.array_equal(face_pixels(half, k)[0],
                                 placed(face_var, face_pixels(half, k)[0].shape[1::-1]))) for k in range(12)}
    assert picks == {True, False}


def test_epochs_draw_different_faces_of_an_identity(one_clip, tokenizer) -> None:
    """Two epochs (augmentations) of one sample use two different ranked faces; three use all."""
    from training_data import png

    uri, frames = one_clip
    row = sample_row("a", str(uri), frames, variant=False, background=False, objects=[])
    row["faces"][0]["ref"] = png(np.full((24, 24, 3), 40, np.uint8))
    row["faces"][0]["crops"] = [{"face_id": f"f{k}", "rank": k, "ref": png(np.full((24, 24, 3), 40 + 80 * k, np.uint8)),
                                 "variant": None, "variant_id": None} for k in (1, 2)]
    config = replace(SMALL, shuffle_refs=False)

    seen = [face_value(row, a, config, tokenizer) for a in range(3)]
    assert seen[0] != seen[1] and sorted(seen) == [40, 120, 200]
    assert face_value(row, 3, config, tokenizer) == seen[0]  # then the cycle repeats
    starts = [face_value(row, 0, replace(config, seed=s), tokenizer) for s in range(1, 6)]
    assert len(set(starts)) > 1  # where the cycle starts is seeded


def face_value(row: dict, augmentation: int, config: DataConfig, tokenizer) -> int:
    """The mean grey of the (solid) face on the example's canvas: which crop was drawn."""
    ex = make_example(row, augmentation, config, tokenizer)
    x, y, w, h = ex.canvas.boxes[0]
    return int(round(np.asarray(ex.canvas.image)[y:y + h, x:x + w].mean()))


def test_caption_dropout_drops_words_and_subjects(one_clip, tokenizer) -> None:
    from dataclasses import replace

    uri, frames = one_clip
    ex = make_example(sample_row("a", str(uri), frames), 0, replace(SMALL, caption_dropout=1.0), tokenizer)
    assert ex.prompt == "" and ex.subjects == [] and ex.guidance is None


@pytest.mark.parametrize("case,reason", [
    ("missing_video", "missing_video"), ("not_a_video", "unreadable_video"),
    ("bad_png", "unreadable_image"), ("too_short", "too_short"), ("empty_range", "bad_range"),
    ("no_refs", "no_references"),
])
def test_bad_records_name_their_reason(case, reason, one_clip, tokenizer, tmp_path: Path) -> None:
    uri, frames = one_clip
    row = sample_row("bad", str(uri), frames)
    if case == "missing_video":
        row["uri"] = str(tmp_path / "gone.mp4")
    elif case == "not_a_video":
        (tmp_path / "text.mp4").write_text("not a video\n" * 50)
        row["uri"] = str(tmp_path / "text.mp4")
    elif case == "bad_png":
        row["objects"][0]["ref"] = row["objects"][0]["variant"] = b"\x89PNG broken"
    elif case == "too_short":
        row["end_frame"] = 4
    elif case == "empty_range":
        row["end_frame"] = 0
    elif case == "no_refs":
        row.update(faces=[], objects=[], background=None)
    with pytest.raises(BadRecord) as info:
        make_example(row, 0, SMALL, tokenizer)
    assert info.value.reason == reason and "sample bad" in str(info.value)


def test_a_part_with_the_wrong_schema_is_skipped_and_counted(tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    folder.mkdir()
    good = samples_table(tmp_path, count=2)
    (folder / "part-a.parquet").write_bytes(good.read_bytes())
    pq.write_table(pa.table({"sample_id": ["x", "y", "z"], "caption": [1, 2, 3]}), folder / "part-b.parquet")
    table = SamplesTable(str(folder))
    assert len(table) == 2 and table.skipped_rows == 3
    assert "part-b.parquet" in table.problems[0] and "column" in table.problems[0]


def test_stream_shards_ranks_and_resumes_exactly(tmp_path: Path, tokenizer) -> None:
    path = samples_table(tmp_path, count=4, frames=16)
    pq.write_table(pq.read_table(path), path, row_group_size=1)  # four row groups: dealt to ranks
    dataset = SamplesDataset(SamplesTable(str(path)), SMALL, tokenizer)

    def ids(stream, n):
        it = iter(stream)
        return [[e.sample_id for e in next(it)] for _ in range(n)]

    # Two ranks with batch 1 read disjoint row groups; per epoch they see every sample once.
    r0 = ids(BatchStream(dataset, 1, SMALL.augmentation, seed=1, rank=0, world=2), 2)
    r1 = ids(BatchStream(dataset, 1, SMALL.augmentation, seed=1, rank=1, world=2), 2)
    assert sorted(sum(r0 + r1, [])) == ["s0", "s1", "s2", "s3"]
    single = ids(BatchStream(dataset, 2, SMALL.augmentation, seed=1), 2)
    assert sorted(sum(single, [])) == ["s0", "s1", "s2", "s3"]
    order = dataset.epoch_order(1, 0, 0, 1)
    assert single[0] == [dataset.sample_id(int(order[0])), dataset.sample_id(int(order[1]))]
    # Fewer row groups than ranks: the stream deals rows of a seeded permutation instead.
    one_group = SamplesDataset(SamplesTable(str(samples_table(tmp_path / "one", count=4, frames=16))), SMALL, tokenizer)
    a = ids(BatchStream(one_group, 1, SMALL.augmentation, seed=1, rank=0, world=2), 2)
    assert sum(a, []) == [one_group.sample_id(int(i)) for i in epoch_order(4, 1, 0)[0::2]]
    # Resume: the state after 3 batches continues with the 4th, 5th, ... batch.
    stream = BatchStream(dataset, 1, SMALL.augmentation, seed=1, workers=2)
    it = iter(stream)
    take = (lambda it, n: [(e.sample_id, e.augmentation) for _ in range(n) for e in next(it)])
    first = take(it, 3)
    saved = StreamState.from_dict(stream.state.to_dict())
    rest = take(it, 6)  # crosses into epochs 1 and 2: augmentation seeds 1 and 2
    assert {a for _, a in rest} == {0, 1, 2}
    resumed = BatchStream(dataset, 1, SMALL.augmentation, seed=1, state=saved)
    assert take(iter(resumed), 6) == rest
    assert first + rest == take(iter(BatchStream(dataset, 1, SMALL.augmentation, seed=1)), 9)


def test_stream_skips_bad_records_once_and_fails_when_none_load(tmp_path: Path, tokenizer) -> None:
    uri, frames = clip(tmp_path / "c.mp4", frames=16)
    rows = [sample_row("good", str(uri), frames), sample_row("gone", str(tmp_path / "no.mp4"), frames)]
    dataset = SamplesDataset(SamplesTable(str(write_samples(tmp_path / "s.parquet", rows))), SMALL, tokenizer)
    messages: list[str] = []
    it = iter(BatchStream(dataset, 1, SMALL.augmentation, log=messages.append))
    assert {next(it)[0].sample_id for _ in range(5)} == {"good"}
    assert len(messages) == 1 and "missing_video" in messages[0]
    bad_only = SamplesDataset(SamplesTable(str(write_samples(tmp_path / "b.parquet", rows[1:]))),
                              SMALL, tokenizer)
    with pytest.raises(NoUsableSamples, match="missing_video"):
        next(iter(BatchStream(bad_only, 1, SMALL.augmentation, log=messages.append)))


def test_buckets_never_mix_in_a_batch(tmp_path: Path, tokenizer) -> None:
    wide, wide_frames = clip(tmp_path / "w.mp4", frames=16, height=48, width=64)
    tall, tall_frames = clip(tmp_path / "t.mp4", frames=16, height=64, width=48, seed=1)
    rows = [sample_row(f"w{i}", str(wide), wide_frames) for i in range(3)]
    rows += [sample_row(f"t{i}", str(tall), tall_frames) for i in range(3)]
    dataset = SamplesDataset(SamplesTable(str(write_samples(tmp_path / "s.parquet", rows))), SMALL, tokenizer)
    it = iter(BatchStream(dataset, 2, SMALL.augmentation))
    for _ in range(6):
        batch = next(it)
        assert len({e.bucket for e in batch}) == 1 and len(batch) == 2


def test_vfr_clips_are_read_at_their_presentation_times(tmp_path: Path) -> None:
    """start_s/end_s (the decoder's pts) place the window; frame numbers / fps would not on VFR."""
    import av

    from curation import synthetic
    from model.train.data import read_clip

    durations = [40, 20, 60, 33, 100, 10, 40, 25, 75, 41] * 4
    uri = str(synthetic.vfr_video(tmp_path / "vfr.mp4", durations, height=48, width=64))
    with av.open(uri) as container:
        stream = container.streams.video[0]
        decoded = [(float(f.pts * stream.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    start, end = 10, 30
    start_s, end_s = decoded[start][0], decoded[end][0]
    config = DataConfig(num_frames=5, min_frames=5, fps=8.0, buckets=((64, 48),))
    frames = read_clip(uri, start, end, 30.0, config, np.random.default_rng(0), "s", start_s, end_s)
    times = [t for t, _ in decoded]
    for image in frames:  # every training frame is one of the clip's own frames, none from outside it
        matches = [n for n in range(len(decoded)) if np.array_equal(decoded[n][1], image)]
        assert matches and all(start <= n < end for n in matches), matches
    assert start / 30.0 < times[start - 1]  # a frame-number guess at 30 fps would start a frame early
    assert times[start] == start_s

"""Generated media with known ground truth, for tests, benchmarks and the offline demo.

Nothing is downloaded: scenes are drawn with NumPy, faces come from scikit-image's
bundled ``astronaut`` photo. Each generator says what a correct pipeline must find
(cut frames, motion or none, a face), so a test can compare against it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import av
import numpy as np

FPS = 24


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: int = FPS,
                codec: str = "libx264", pix_fmt: str = "yuv420p") -> Path:
    """Encode RGB uint8 frames (H, W, 3) to ``path`` with PyAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=fps)
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = pix_fmt
                if codec == "libx264":
                    stream.options = {"preset": "ultrafast", "crf": "23"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return path


def vfr_video(path: str | os.PathLike, durations_ms: Sequence[int], height: int = 96, width: int = 128,
              seed: int = 0) -> Path:
    """A variable-frame-rate video: frame i is shown for ``durations_ms[i]`` milliseconds.

    Every frame differs (a moving square and the frame number in its pixels), so a reader
    that picks the wrong frame is caught. Timestamps are in a 1/1000 s time base, as phone
    recordings and screen captures write them.
    """
    from fractions import Fraction

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = list(scene_frames(len(durations_ms), [], height=height, width=width, seed=seed))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=1000 // max(1, min(durations_ms)))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"preset": "ultrafast", "crf": "18"}
        pts = 0
        for image, duration in zip(frames, durations_ms):
            image = image.copy()
            image[:8, :8] = (pts * 7) % 256  # a mark that differs frame to frame
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
            pts += int(duration)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _texture(rng: np.random.Generator, height: int, width: int, base: Sequence[int]) -> np.ndarray:
    """A coloured, lightly noisy background: flat colour alone hides motion from optical flow."""
    noise = rng.integers(-20, 21, size=(height // 8 + 1, width // 8 + 1, 3))
    noise = np.kron(noise, np.ones((8, 8, 1), dtype=noise.dtype))[:height, :width]
    return np.clip(np.asarray(base)[None, None, :] + noise, 0, 255).astype(np.uint8)


SCENE_COLOURS = [(200, 60, 60), (60, 180, 70), (60, 80, 210), (220, 200, 60), (160, 60, 190), (60, 190, 190)]


def scene_frames(num_frames: int, cuts: Sequence[int], height: int = 144, width: int = 256,
                 moving: bool = True, seed: int = 0) -> Iterable[np.ndarray]:
    """Frames of scenes separated by hard cuts at the frame indices ``cuts``.

    Each scene has its own background colour and a textured square that moves
    (``moving=True``) or stays put, so motion filters have something to measure.
    """
    rng = np.random.default_rng(seed)
    bounds = [0, *sorted(cuts), num_frames]
    square = max(8, min(height, width) // 4)
    for scene, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        background = _texture(rng, height, width, SCENE_COLOURS[scene % len(SCENE_COLOURS)])
        patch = rng.integers(0, 256, size=(square, square, 3), dtype=np.uint8)
        for i in range(end - start):
            frame = background.copy()
            step = (i * 3) if moving else 0
            x = (width // 8 + step) % (width - square)
            y = (height // 3 + (step // 2 if moving else 0)) % (height - square)
            frame[y:y + square, x:x + square] = patch
            yield frame


def cuts_video(path: str | os.PathLike, cuts: Sequence[int], num_frames: int, **kwargs) -> Path:
    """A video with hard cuts exactly at ``cuts`` (the first frame of each new scene)."""
    fps = kwargs.pop("fps", FPS)
    return write_video(path, scene_frames(num_frames, cuts, **kwargs), fps=fps)


def static_video(path: str | os.PathLike, seconds: float = 3.0, **kwargs) -> Path:
    fps = kwargs.pop("fps", FPS)
    return write_video(path, scene_frames(int(seconds * fps), [], moving=False, **kwargs), fps=fps)


def moving_video(path: str | os.PathLike, seconds: float = 3.0, **kwargs) -> Path:
    fps = kwargs.pop("fps", FPS)
    return write_video(path, scene_frames(int(seconds * fps), [], moving=True, **kwargs), fps=fps)


def astronaut() -> np.ndarray:
    """scikit-image's bundled astronaut photo (512x512 RGB; the face is near [180:270, 60:175])."""
    from skimage import data

    return data.astronaut()


def face_video(path: str | os.PathLike, seconds: float = 2.0, size: tuple[int, int] = (256, 256),
               fps: int = FPS) -> Path:
    """A slow pan-and-zoom over the astronaut photo: one real face, moving, for stage 3."""
    import cv2

    photo = astronaut()
    height, width = size
    total = int(seconds * fps)

    def frames() -> Iterable[np.ndarray]:
        for i in range(total):
            t = i / max(total - 1, 1)
            crop = int(400 - 80 * t)
            x0, y0 = int(20 + 60 * t), int(10 + 30 * t)
            window = photo[y0:y0 + crop, x0:x0 + crop]
            yield cv2.resize(window, (width, height), interpolation=cv2.INTER_AREA)

    return write_video(path, frames(), fps=fps)


def good_corpus(folder: str | os.PathLike, count: int = 6, seconds: float = 2.0) -> list[Path]:
    """``count`` small valid videos of different sizes, codecs and contents."""
    folder = Path(folder)
    made = []
    variants = [
        ("moving.mp4", dict(moving=True, height=144, width=256)),
        ("static.mp4", dict(moving=False, height=144, width=256)),
        ("wide.mp4", dict(moving=True, height=120, width=320)),
        ("odd_size.mp4", dict(moving=True, height=98, width=130)),
        ("tall.mp4", dict(moving=True, height=256, width=144)),
        ("mpeg4.avi", dict(moving=True, height=128, width=160, codec="mpeg4")),
    ]
    for i in range(count):
        name, options = variants[i % len(variants)]
        if i >= len(variants):
            name = f"{i:03d}_{name}"
        options = dict(options)
        codec = options.pop("codec", "libx264")
        frames = scene_frames(int(seconds * FPS), [], seed=i, **options)
        made.append(write_video(folder / name, frames, codec=codec))
    return made


def bad_corpus(folder: str | os.PathLike) -> dict[str, Path]:
    """Files that are not usable videos, one per failure kind, keyed by that kind."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    made["zero_byte"] = folder / "empty.mp4"
    made["zero_byte"].write_bytes(b"")
    whole = write_video(folder / ".whole.tmp.mp4", scene_frames(48, [], height=64, width=64))
    made["truncated"] = folder / "truncated.mp4"
    data = whole.read_bytes()
    made["truncated"].write_bytes(data[: len(data) // 2])
    whole.unlink()
    made["text"] = folder / "notes.mp4"
    made["text"].write_text("this is a text file, not a video\n" * 20)
    made["audio_only"] = _audio_only(folder / "sound.m4a")
    made["tiny"] = write_video(folder / "one_pixel.mkv", (np.full((1, 1, 3), i * 20, np.uint8) for i in range(10)),
                               codec="ffv1", pix_fmt="bgr0")
    made["bogus_extension"] = folder / "data.xyz"
    made["bogus_extension"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return made


def _audio_only(path: Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        t = np.arange(int(seconds * rate)) / rate
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = tone[start:start + 1024][None, :]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def object_frames(count: int, height: int, width: int, seed: int = 0) -> Iterable[np.ndarray]:
    """A grassy, noisy scene with a red disc rolling across it and a blue square: things for
    stage 2 to ground and segment (the disc moves 2 px per frame)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    radius = max(6, height // 6)
    for i in range(count):
        frame = np.clip(rng.normal((90, 140, 90), 12, (height, width, 3)), 0, 255).astype(np.uint8)
        cx, cy = width // 4 + 2 * i, height // 2
        frame[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius * radius] = (220, 40, 40)
        top, left = height // 6, width - width // 4
        frame[top:top + 2 * radius, left:left + 2 * radius] = (40, 60, 220)
        yield frame


def objects_video(path: str | os.PathLike, seconds: float = 2.0, height: int = 96, width: int = 128,
                  seed: int = 0, fps: int = FPS) -> Path:
    return write_video(path, object_frames(int(seconds * fps), height, width, seed), fps=fps)

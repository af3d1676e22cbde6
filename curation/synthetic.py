"""Generated media with known ground truth, for tests, benchmarks and the offline demo.

Nothing is downloaded: scenes are drawn with NumPy, faces come from scikit-image's
bundled ``astronaut`` photo. Each generator says what a correct pipeline must find
(cut frames, motion or none, a face), so a test can compare against it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import av
import numpy as np

FPS = 24


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: int = FPS,
                codec: str = "libx264", pix_fmt: str = "yuv420p", options: dict[str, str] | None = None) -> Path:
    """Encode RGB uint8 frames (H, W, 3) to ``path`` with PyAV (x264 ultrafast unless ``options`` say)."""
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
                    stream.options = options or {"preset": "ultrafast", "crf": "23"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return path


def vfr_video(path: str | os.PathLike, durations_ms: Sequence[int], height: int = 96, width: int = 128,
              seed: int = 0, cuts: Sequence[int] = ()) -> Path:
    """A variable-frame-rate video: frame i is shown for ``durations_ms[i]`` milliseconds
    (hard cuts before the frame numbers ``cuts``).

    Every frame differs (a moving square and the frame number in its pixels), so a reader
    that picks the wrong frame is caught. Timestamps are in a 1/1000 s time base, as phone
    recordings and screen captures write them.
    """
    from fractions import Fraction

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = list(scene_frames(len(durations_ms), cuts, height=height, width=width, seed=seed))
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


# ---------------------------------------------------------------------------
# Camera-like footage, edited: shots joined by cuts, fades and dissolves, truth known.
# ---------------------------------------------------------------------------

TRANSITION_KINDS = ("cut", "dissolve", "fade_black", "fade_white")
EDGE_KINDS = ("fade_in", "fade_out")  # from black at the video's start, to black at its end


@dataclass(frozen=True)
class Transition:
    """Frames ``[start, end)`` belong to no single shot (``start == end``: a hard cut at ``end``)."""

    kind: str
    start: int
    end: int


@dataclass
class EditedVideo:
    """What a correct stage 1 must find in a ``camera_video``."""

    path: Path
    num_frames: int
    fps: int
    shots: list[tuple[int, int]]  # frames that show one shot and nothing else, [start, end)
    transitions: list[Transition]


class _Shot:
    """One continuous camera take: a textured world seen through a panning, zooming camera,
    a moving object, slight exposure flicker. Drawn at the output size, no full-res buffers."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, fps: int,
                 palette: np.ndarray | None = None):
        import cv2

        self.height, self.width, self.rng = height, width, rng
        world_h, world_w = int(height * 1.6), int(width * 1.6)
        palette = palette if palette is not None else _palette(rng)
        field = np.zeros((world_h, world_w), np.float32)
        for cells, amplitude in ((3, 1.0), (9, 0.5), (27, 0.3), (81, 0.2)):
            grid = rng.random((max(2, cells * world_h // world_w), cells)).astype(np.float32)
            field += amplitude * cv2.resize(grid, (world_w, world_h), interpolation=cv2.INTER_CUBIC)
        field = (field - field.min()) / max(float(np.ptp(field)), 1e-6) * 2
        low = np.clip(field, 0, 1)[..., None]
        high = np.clip(field - 1, 0, 1)[..., None]
        world = palette[0] * (1 - low) + palette[1] * low * (1 - high) + palette[2] * high
        for _ in range(int(rng.integers(6, 14))):  # buildings, trees, furniture: edges for flow and detectors
            colour = tuple(float(c) for c in np.clip(palette[int(rng.integers(3))] + rng.normal(0, 30, 3), 0, 255))
            x, y = int(rng.integers(0, world_w)), int(rng.integers(0, world_h))
            sx, sy = int(rng.integers(world_w // 30 + 2, world_w // 6)), int(rng.integers(world_h // 30 + 2, world_h // 4))
            if rng.random() < 0.5:
                cv2.rectangle(world, (x, y), (x + sx, y + sy), colour, -1)
            else:
                cv2.ellipse(world, (x, y), (sx, sy), float(rng.uniform(0, 180)), 0, 360, colour, -1)
        self.world = np.clip(world, 0, 255).astype(np.uint8)
        # camera: pan in px/frame of the output, a slow zoom
        speed = rng.uniform(0.01, 0.12) * width / fps
        angle = rng.uniform(0, 2 * np.pi)
        self.pan = (speed * np.cos(angle), speed * np.sin(angle))
        self.zoom = rng.uniform(-0.04, 0.04) / fps
        self.object = rng.integers(0, 256, (max(4, height // 5), max(4, height // 5), 3), dtype=np.uint8)
        self.object_at = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        self.object_v = rng.normal(0, 0.08, 2) * width / fps

    def frame(self, t: int) -> np.ndarray:
        import cv2

        world_h, world_w = self.world.shape[:2]
        scale = 1.0 + self.zoom * t
        cx = world_w / 2 + self.pan[0] * t
        cy = world_h / 2 + self.pan[1] * t
        # output pixel (u, v) shows world point centre + (u - w/2, v - h/2) / scale
        m = np.array([[scale, 0, self.width / 2 - scale * cx], [0, scale, self.height / 2 - scale * cy]], np.float32)
        image = cv2.warpAffine(self.world, m, (self.width, self.height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        size = self.object.shape[0]
        x, y = (self.object_at + self.object_v * t).astype(int)
        x, y = x % max(1, self.width - size), y % max(1, self.height - size)
        image[y:y + size, x:x + size] = self.object
        return image


def _palette(rng: np.random.Generator) -> np.ndarray:
    """Three related colours of one place: a hue, a darker and a lighter neighbour."""
    hue, base = rng.uniform(0, 180), rng.uniform(70, 190)
    return np.array([_hsv((hue + d) % 180, rng.uniform(60, 200), np.clip(base + v, 20, 235))
                     for d, v in ((0, 0), (rng.uniform(-25, 25), -45), (rng.uniform(-40, 40), 40))], np.float32)


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    import cv2

    pixel = np.array([[[hue, saturation, value]]], np.uint8)
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def edit_plan(kinds: Sequence[str], rng: np.random.Generator, fps: int = FPS,
              shot_seconds: tuple[float, float] = (3.0, 4.5), transition_seconds: tuple[float, float] = (0.5, 1.5),
              hold_frames: tuple[int, int] = (0, 12)) -> list[tuple[str, int, int, int]]:
    """``(kind, frames out, frames held, frames in)`` per join, and shot lengths, as one list:
    entry 0 is ``("shot", length, 0, 0)``, then joins and shots alternate."""
    def frames(low: float, high: float) -> int:
        return int(round(rng.uniform(low, high) * fps))

    plan = [("shot", frames(*shot_seconds), 0, 0)]
    for kind in kinds:
        if kind == "cut":
            plan.append(("cut", 0, 0, 0))
        elif kind == "dissolve":
            plan.append(("dissolve", frames(*transition_seconds), 0, 0))
        elif kind in ("fade_black", "fade_white"):
            half = transition_seconds[0] / 2, transition_seconds[1] / 2
            plan.append((kind, frames(*half), int(rng.integers(hold_frames[0], hold_frames[1] + 1)), frames(*half)))
        else:
            raise ValueError(f"unknown transition kind {kind!r}; use one of {TRANSITION_KINDS}")
        plan.append(("shot", frames(*shot_seconds), 0, 0))
    return plan


def camera_video(path: str | os.PathLike, kinds: Sequence[str] = TRANSITION_KINDS, *, height: int = 108,
                 width: int = 192, fps: int = FPS, seed: int = 0, edges: bool = False, grain: float = 3.5,
                 preset: str = "veryfast", same_place: bool = False, **plan_options) -> EditedVideo:
    """Camera-like shots (textured world, pan/zoom, a moving object, film grain, x264 ``preset``)
    joined by ``kinds`` in order; ``edges`` adds a fade in from black and a fade out to black.
    ``same_place``: every shot has the same colours and light (another angle of one
    location, as most edits are), which is what makes colour-based detectors struggle.

    Returns the truth: every transition's frame range and every shot's pure frames. As in an
    edit, a shot keeps running under a dissolve or fade out, and the next one starts under
    its dissolve or fade in (each shot's clock is 0 on its first pure frame).
    """
    rng = np.random.default_rng(seed)
    plan = edit_plan(kinds, rng, fps, **plan_options)
    timeline: list[tuple] = []  # one entry per output frame: what to draw
    transitions: list[Transition] = []
    shots: list[tuple[int, int]] = []
    shot = -1
    if edges:
        fade = int(round(rng.uniform(0.5, 1.0) * fps))
        timeline.extend(("fade", 0, k - fade, (k + 1) / (fade + 1), 0.0) for k in range(fade))
        transitions.append(Transition("fade_in", 0, fade))
    for kind, out, hold, into in plan:
        if kind == "shot":
            shot += 1
            shots.append((len(timeline), len(timeline) + out))
            timeline.extend(("shot", shot, t) for t in range(out))
            continue
        start, ran = len(timeline), shots[-1][1] - shots[-1][0]
        if kind == "dissolve":
            timeline.extend(("mix", shot, ran + k, shot + 1, k - out, (k + 1) / (out + 1)) for k in range(out))
        elif kind != "cut":
            level = 0.0 if kind == "fade_black" else 255.0
            timeline.extend(("fade", shot, ran + k, 1 - (k + 1) / (out + 1), level) for k in range(out))
            timeline.extend(("flat", level) for _ in range(hold))
            timeline.extend(("fade", shot + 1, k - into, (k + 1) / (into + 1), level) for k in range(into))
        transitions.append(Transition(kind, start, len(timeline)))
    if edges:
        start, ran = len(timeline), shots[-1][1] - shots[-1][0]
        fade = int(round(rng.uniform(0.5, 1.0) * fps))
        timeline.extend(("fade", shot, ran + k, 1 - (k + 1) / (fade + 1), 0.0) for k in range(fade))
        transitions.append(Transition("fade_out", start, len(timeline)))
    place = _palette(rng) if same_place else None
    takes = [_Shot(np.random.default_rng([seed, i]), height, width, fps, place) for i in range(shot + 1)]
    # film grain: a random crop of one large noise field per frame (independent enough, cheap)
    grains = rng.normal(0, grain, (2 * height, 2 * width, 1)).astype(np.float32)

    def frames() -> Iterable[np.ndarray]:
        for step in timeline:
            if step[0] == "flat":  # digital black or white: no grain
                yield np.full((height, width, 3), step[1], np.uint8)
                continue
            y, x = int(rng.integers(height)), int(rng.integers(width))
            noise = grains[y:y + height, x:x + width]
            image = takes[step[1]].frame(step[2]).astype(np.float32) + noise
            if step[0] == "mix":
                other = takes[step[3]].frame(step[4]).astype(np.float32) + noise
                image = (1 - step[5]) * image + step[5] * other
            elif step[0] == "fade":
                image = step[3] * image + (1 - step[3]) * step[4]
            yield np.clip(image, 0, 255).astype(np.uint8)

    out = write_video(path, frames(), fps=fps, options={"preset": preset, "crf": "20"})
    return EditedVideo(out, len(timeline), fps, shots, transitions)


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


def legacy_handler_video(path: str | os.PathLike, seconds: float = 1.0, **kwargs) -> Path:
    """A valid H.264 mp4 whose ``hdlr`` handler names are bytes in a legacy code page.

    QuickTime-written stock footage does this; PyAV's strict metadata decoding then
    refuses a file every decoder plays. The names keep their length, so the file stays valid.
    """
    path = moving_video(path, seconds=seconds, **kwargs)
    data = bytearray(path.read_bytes())
    at = data.find(b"hdlr")
    while at >= 4:
        size = int.from_bytes(data[at - 4:at], "big")
        name_start, name_end = at + 28, at - 4 + size  # type, flags, pre_defined, handler type, reserved
        for i in range(name_start, name_end):
            if data[i]:
                data[i] = 0xE9  # 'é' in Latin-1; not valid UTF-8 on its own
        at = data.find(b"hdlr", at + 4)
    path.write_bytes(bytes(data))
    return path

"""Stage 3 throughput: faces/s of each backend, against a plain decode of the same frames, in one run.

    python benchmarks/faces.py [--frames 48 --width 1280 --height 720]
    python benchmarks/faces.py --backends real-size --device cuda     # on a GPU node, onnxruntime-gpu installed

Frames are generated: two real faces per frame (the astronaut and InsightFace's Tom Hanks
test image, panned and zoomed, side by side) at the given size, encoded once; the
baseline is a plain threaded PyAV decode of that video (frames/s), measured in the
same process, so ``decode-equivalents`` (backend time / decode time per frame) is
comparable across machines.

Backends:

* ``dlib``: the real dlib backend end to end (``measure.measure_faces``: detection,
  68 landmarks, 128-d descriptors, pose, blur, crop PNG, filter verdict);
* ``tiny``: the generated InsightFace pack end to end (the same code path as a real
  pack; its models are toys, so this measures our overhead around InsightFace, not
  InsightFace);
* ``real-size``: SCRFD-10G + ArcFace-R100 graphs (antelopev2's architectures, random
  weights, ``benchmarks/face_archs.py``) through the real ``FaceAnalysis`` on
  onnxruntime (CUDA provider when ``--device cuda`` and onnxruntime-gpu are there).
  Random weights detect nothing meaningful, so the two costs are timed apart: the
  detector per frame at ``det_size`` and the recognizer per face in batches of
  ``--rec-batch`` aligned 112x112 faces; faces/s per actor is reported for
  ``--faces-per-frame`` faces per frame: ``F / (t_det + F * t_rec)``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from curation.decode import decode_all  # noqa: E402
from curation.faces import synthetic  # noqa: E402
from curation.faces import FacesConfig  # noqa: E402
from curation.faces.detect import InsightFaceConfig  # noqa: E402
from curation.faces.dlib_backend import DlibConfig  # noqa: E402
from curation.faces.measure import CLIP, measure_faces  # noqa: E402
from curation.frames import read_clip_frames, uniform  # noqa: E402
from curation.synthetic import write_video  # noqa: E402


class Frames:
    def __init__(self, images):
        self.images = images
        self.indices = np.arange(len(images))
        self.times = self.indices / synthetic.FPS

    def __len__(self):
        return len(self.indices)


def make_video(folder: Path, count: int, width: int, height: int) -> Path:
    path = folder / f"two_faces_{count}_{width}x{height}.mp4"
    if path.exists():
        return path
    half = (width // 2, height)
    left = synthetic.posed_frames(synthetic.astronaut(), count, half)
    right = synthetic.posed_frames(synthetic.tom_hanks(), count, half)
    return write_video(path, (np.hstack([a, b]) for a, b in zip(left, right)))


def timed(fn, repeat: int = 1):
    fn()  # warm-up: first-call allocations, ORT graph optimisation
    start = time.perf_counter()
    for _ in range(repeat):
        result = fn()
    return (time.perf_counter() - start) / repeat, result


def end_to_end(name: str, backend, config: FacesConfig, frames: np.ndarray, decode_fps: float, clip: int) -> dict:
    """measure_faces over the frames, ``clip`` frames per call (one clip's worth)."""
    size = (frames.shape[2], frames.shape[1])
    chunks = [frames[i:i + clip] for i in range(0, len(frames), clip)]

    def run():
        return sum(len(measure_faces(backend, {CLIP: Frames(chunk)}, size, config)) for chunk in chunks)

    seconds, faces = timed(run)
    return {"backend": name, "frames/s": len(frames) / seconds, "faces/s": faces / seconds,
            "faces/frame": faces / len(frames), "decode-equivalents": decode_fps * seconds / len(frames)}


def real_size(device: str, det_size: int, frames: np.ndarray, rec_batch: int, faces_per_frame: int,
              decode_fps: float) -> dict:
    from face_archs import arcface_r100, gmacs, scrfd_10g, write_real_size_pack

    from curation.faces.detect import load_insightface

    folder = write_real_size_pack(os.path.join(tempfile.gettempdir(), "magref-bench-antelope-arch"))
    backend = load_insightface(folder, device).configure(InsightFaceConfig(det_size=det_size))
    bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames[:8]]
    det_s, _ = timed(lambda: [backend.detector.detect(image, max_num=0) for image in bgr])
    det_s /= len(bgr)
    faces = [np.random.default_rng(i).integers(0, 256, (112, 112, 3), dtype=np.uint8) for i in range(rec_batch)]
    rec_s, _ = timed(lambda: backend.recognizer.get_feat(faces), repeat=2)
    rec_s /= rec_batch
    per_frame = det_s + faces_per_frame * rec_s
    return {"backend": f"real-size ({backend.recognizer.session.get_providers()[0]})",
            "frames/s": 1 / per_frame, "faces/s": faces_per_frame / per_frame, "faces/frame": faces_per_frame,
            "decode-equivalents": decode_fps * per_frame,
            "note": (f"SCRFD-10G {gmacs(scrfd_10g(), (1, 3, det_size, det_size)):.1f} GMAC at {det_size}: "
                     f"{1 / det_s:.1f} frames/s; ArcFace-R100 {gmacs(arcface_r100(), (1, 3, 112, 112)):.1f} GMAC: "
                     f"{1 / rec_s:.1f} faces/s in batches of {rec_batch}")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--clip", type=int, default=16, help="frames per measure_faces call (one clip)")
    parser.add_argument("--backends", default="dlib,tiny,real-size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--det-size", type=int, default=640)
    parser.add_argument("--rec-batch", type=int, default=32)
    parser.add_argument("--faces-per-frame", type=int, default=2)
    args = parser.parse_args()

    folder = Path(tempfile.gettempdir()) / "magref-bench-faces"
    folder.mkdir(exist_ok=True)
    video = make_video(folder, args.frames, args.width, args.height)
    decode_s, count = timed(lambda: decode_all(str(video)))
    decode_fps = count / decode_s
    frames = read_clip_frames(str(video), 0, args.frames, 0.0, args.frames / synthetic.FPS, uniform(args.frames)).images
    print(f"{args.frames} frames {args.width}x{args.height}, 2 faces each; plain decode {decode_fps:.0f} frames/s")

    rows = []
    for name in args.backends.split(","):
        if name == "dlib":
            from curation.faces.dlib_backend import tiny_dlib

            config = FacesConfig(backend="dlib", dlib=DlibConfig(upsample=0))  # faces here are >= 80 px
            rows.append(end_to_end("dlib (HOG, upsample 0)", tiny_dlib(args.device).configure(config.dlib), config,
                                   frames, decode_fps, args.clip))
        elif name == "tiny":
            from curation.faces.tiny_pack import tiny_insightface

            config = FacesConfig(insightface=InsightFaceConfig(det_size=args.det_size))
            rows.append(end_to_end("insightface tiny pack", tiny_insightface(args.device).configure(config.insightface),
                                   config, frames, decode_fps, args.clip))
        elif name == "real-size":
            rows.append(real_size(args.device, args.det_size, frames, args.rec_batch, args.faces_per_frame, decode_fps))
        else:
            parser.error(f"unknown backend {name!r}: dlib, tiny, real-size")
    for row in rows:
        print(f"{row['backend']:<40} {row['frames/s']:8.2f} frames/s {row['faces/s']:8.2f} faces/s "
              f"({row['faces/frame']:.1f}/frame)  = {row['decode-equivalents']:.1f} decodes of the same frame")
        if row.get("note"):
            print(f"{'':<40} {row['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

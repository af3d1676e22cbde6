"""OpenS2V-5M import speed: keys per second, per key (no Ray) and for the whole job.

    python benchmarks/import_opens2v.py [--keys 8] [--width 1280 --height 720]
    python benchmarks/import_opens2v.py --faces [--keys 8]    # faces off vs on (generated pack)
    python benchmarks/import_opens2v.py --scan-mb 200           # the driver's offset scan, MB/s

Builds a part in their layout (``curation/opens2v/synthetic.py``: generated videos, four
RLE masks per key on the annotated frame, a view, a background, a pair list), then times
``import_keys`` on every key in this process (probe with content hash, one decoded frame,
RLE decode, cut-outs, PNG encode: the work per key) and the whole job
(``pipelines/import_opens2v.py``: Ray start, commits, cross pairs, samples assembly; faces
off). ``--faces`` times the whole job on ``build_faces``'s part (256x256, two faces a frame, one
in the person box) with ``faces=false`` and then with the default faces pass over the person
boxes (``--models tiny``: the generated InsightFace pack, so only the overhead is meaningful),
each into its own run on one already started Ray. ``--scan-mb`` writes a part of that many MB
(copies of a 1280x720 key with four RLE masks) and times ``scan_part`` against ``json.load``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.opens2v.references import Folders, OpenS2VConfig, import_keys  # noqa: E402
from curation.opens2v.scan import scan_part  # noqa: E402
from curation.opens2v.synthetic import build, build_faces, entry  # noqa: E402
from pipelines import import_opens2v  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=8)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--faces", action="store_true", help="time the job with faces off, then on")
    parser.add_argument("--scan-mb", type=int, default=0, help="time the offset scan on a part this large")
    args = parser.parse_args()
    if args.scan_mb:
        return scan_speed(args.scan_mb)
    if args.faces:
        return faces_speed(args.keys)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = build(root, keys=args.keys, width=args.width, height=args.height, broken=False)
        rows = [{"key": s.key, "offset": s.offset, "length": s.length, "parse_error": s.error}
                for s in scan_part(str(files["json"]))]
        folders = Folders(str(files["videos"]), str(files["backgrounds"]), str(files["views"]))
        import_keys(rows[:1], folders, OpenS2VConfig(), str(files["json"]))  # warm imports
        start = time.perf_counter()
        imports, tables = import_keys(rows, folders, OpenS2VConfig(), str(files["json"]))
        per_key = time.perf_counter() - start
        assert all(r["status"] == "kept" for r in imports), imports
        start = time.perf_counter()
        code = import_opens2v.main(["--json", str(files["json"]), "--videos", str(files["videos"]),
                                    "--backgrounds", str(files["backgrounds"]), "--views", str(files["views"]),
                                    "--pairs", str(files["pairs"]), "--run-dir", str(root / "run"),
                                    "--set", "faces=false"])
        job = time.perf_counter() - start
        assert code == 0
    print(f"{args.keys} keys at {args.width}x{args.height}, {len(tables['objects'])} masks: "
          f"import_keys {args.keys / per_key:.2f} keys/s ({per_key / args.keys * 1000:.0f} ms/key, one process); "
          f"whole job {args.keys / job:.2f} keys/s ({job:.1f} s incl. Ray start and samples)")


def faces_speed(keys: int) -> None:
    import ray

    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                os.environ.get("PYTHONPATH", "")])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        files = build_faces(Path(tmp), keys=keys)
        seconds = {}
        for n, faces in enumerate(("false", "true", "false")):  # the first run warms Ray's workers: not counted
            start = time.perf_counter()
            code = import_opens2v.main(["--json", str(files["json"]), "--videos", str(files["videos"]),
                                        "--run-dir", str(Path(tmp) / f"run_{n}"), "--models", "tiny",
                                        "--set", f"faces={faces}"])
            seconds[faces] = time.perf_counter() - start
            assert code == 0
    ray.shutdown()
    print(f"{keys} keys at 256x256: faces off {keys / seconds['false']:.2f} keys/s ({seconds['false']:.1f} s), "
          f"faces on {keys / seconds['true']:.2f} keys/s ({seconds['true']:.1f} s; stage 3 + 4b + samples)")


def scan_speed(megabytes: int) -> None:
    value = json.dumps(entry("v.mp4", 1280, 720))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "part.json")
        count = 0
        with open(path, "w") as stream:
            stream.write("{")
            while stream.tell() < megabytes << 20:
                stream.write(("," if count else "") + f'\n"key{count}": {value}')
                count += 1
            stream.write("\n}")
        size = os.path.getsize(path)
        start = time.perf_counter()
        spans = sum(1 for _ in scan_part(path))
        scan = time.perf_counter() - start
        start = time.perf_counter()
        with open(path) as stream:
            whole = len(json.load(stream))
        load = time.perf_counter() - start
    assert spans == whole == count
    print(f"{size / 1e6:.0f} MB, {count} keys of {len(value)} bytes: scan_part {size / 1e6 / scan:.0f} MB/s "
          f"({scan:.1f} s, one chunk held); json.load of the whole file {size / 1e6 / load:.0f} MB/s ({load:.1f} s)")


if __name__ == "__main__":
    main()

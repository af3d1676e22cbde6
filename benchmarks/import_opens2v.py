"""OpenS2V-5M import speed: keys per second, per key (no Ray) and for the whole job.

    python benchmarks/import_opens2v.py [--keys 8] [--width 1280 --height 720]

Builds a part in their layout (``curation/opens2v/synthetic.py``: generated videos, four
RLE masks per key on the annotated frame, a view, a background, a pair list), then times
``import_keys`` on every key in this process (probe with content hash, one decoded frame,
RLE decode, cut-outs, PNG encode: the work per key) and the whole job
(``pipelines/import_opens2v.py``: Ray start, commits, cross pairs, samples assembly).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.opens2v.references import Folders, OpenS2VConfig, import_keys  # noqa: E402
from curation.opens2v.scan import scan_part  # noqa: E402
from curation.opens2v.synthetic import build  # noqa: E402
from pipelines import import_opens2v  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=8)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    args = parser.parse_args()
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
                                    "--pairs", str(files["pairs"]), "--run-dir", str(root / "run")])
        job = time.perf_counter() - start
        assert code == 0
    print(f"{args.keys} keys at {args.width}x{args.height}, {len(tables['objects'])} masks: "
          f"import_keys {args.keys / per_key:.2f} keys/s ({per_key / args.keys * 1000:.0f} ms/key, one process); "
          f"whole job {args.keys / job:.2f} keys/s ({job:.1f} s incl. Ray start and samples)")


if __name__ == "__main__":
    main()

"""Commit batching: files written and seconds per input, one commit per block vs per ``--part-inputs``.

Runs stage 0 (the probe: the cheapest real stage, so the bookkeeping shows) in this process
on an embedded Ray, over ``N`` small generated videos, once committing every block (the old
behaviour: ``--part-inputs`` equal to the block size) and once with the default
``--part-inputs``, at two or more sizes, and prints per-input seconds and parts per folder
side by side::

    python benchmarks/commit_parts.py --sizes 200,1000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation import synthetic  # noqa: E402
from pipelines import stage0_probe  # noqa: E402
from pipelines.cli import PART_INPUTS  # noqa: E402
from pipelines.wiring import init_ray  # noqa: E402

BLOCK = 8  # stage 0's default block (probe.pool.batch_size)


def corpus(folder: Path, count: int) -> Path:
    seed = synthetic.write_video(folder / "seed.mp4", synthetic.scene_frames(4, [], height=32, width=32))
    data = seed.read_bytes()
    videos = folder / "videos"
    for i in range(count):  # distinct bytes so ids differ
        (videos / f"{i // 500}").mkdir(parents=True, exist_ok=True)
        (videos / f"{i // 500}" / f"v{i:06d}.mp4").write_bytes(data + i.to_bytes(4, "little"))
    return videos


def run(videos: Path, run_dir: Path, part_inputs: int) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    code = stage0_probe.main(["--input", str(videos), "--run-dir", str(run_dir), "--progress", "off",
                              "--part-inputs", str(part_inputs)])
    seconds = time.perf_counter() - started
    assert code == 0, code
    folders = {"videos": run_dir / "videos", "ledger": run_dir / "_ledger" / "probe"}
    return seconds, {name: len(list(folder.glob("part-*.parquet"))) for name, folder in folders.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="200,1000")
    args = parser.parse_args()
    init_ray(None, False)
    print(f"{'inputs':>7} {'commit':>18} {'s/input':>9} {'video parts':>12} {'ledger parts':>13}")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            videos = corpus(Path(tmp), size)
            for label, part_inputs in ((f"per block ({BLOCK})", BLOCK), (f"--part-inputs {PART_INPUTS}", PART_INPUTS)):
                seconds, parts = run(videos, Path(tmp) / f"run-{part_inputs}", part_inputs)
                print(f"{size:>7} {label:>18} {seconds / size:>9.4f} {parts['videos']:>12} {parts['ledger']:>13}",
                      flush=True)


if __name__ == "__main__":
    main()

"""Several processes on one global batch = one process: torchrun (gloo) and Ray Train, CPU.

Full fine-tuning runs FSDP2 (parameters, gradients and AdamW state sharded over 2
processes), LoRA runs DDP. With the global batch fixed at 2, each of 2 processes takes 1
example per step; the noise of an example depends on (seed, step, sample, augmentation),
not on the rank, so the runs see the same examples with the same noise, and only the
order of floating-point reductions differs. Tolerances: losses to 1e-5 relative; weights
to 1e-4 absolute after 3 AdamW steps at lr 1e-3 (|w| ~ 1). Adam divides each gradient by
its own running scale, so on an element whose gradient is near zero, reduction-order noise
can move the weight by up to lr per step; seen here: at most 1.1e-5 (1% of one step).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import run_script
from safetensors.torch import load_file
from training_data import samples_table

pytestmark = pytest.mark.slow

COMMON = ["--base", "tiny", "--steps", "3", "--lr", "1e-3", "--frames", "9", "--min-frames", "5",
          "--bucket", "64x48", "--batch-size", "2", "--data-workers", "0"]
MODES = {"full": [], "lora": ["--lora-rank", "4"]}


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return samples_table(tmp_path_factory.mktemp("dist"), count=2, frames=16)


@pytest.fixture(scope="module")
def single(table: Path, tmp_path_factory) -> dict[str, Path]:
    """One process, micro-batch 2: the reference runs."""
    from model.train.loop import main

    outs = {}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for mode, extra in MODES.items():
            outs[mode] = tmp_path_factory.mktemp(f"single-{mode}")
            assert main(["--manifest", str(table), *COMMON, *extra, "--out", str(outs[mode])]) == 0
    finally:
        torch.set_num_threads(before)
    return outs


def losses(out: Path) -> list[float]:
    with (out / "loss.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def assert_same_run(a: Path, b: Path, weights: str) -> None:
    assert losses(a) == pytest.approx(losses(b), rel=1e-5) and len(losses(a)) == 3
    wa, wb = load_file(str(a / weights)), load_file(str(b / weights))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-4)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_torchrun_two_processes_match_one(mode: str, table: Path, single: dict[str, Path],
                                          tmp_path: Path) -> None:
    out = tmp_path / "two"
    import subprocess

    try:
        proc = run_script(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "model.train", "--manifest", str(table), *COMMON, *MODES[mode],
                           "--out", str(out)], timeout=600)
    except subprocess.TimeoutExpired as exc:  # show where it stood, not just "timeout"
        tail = (exc.stderr or b"")[-3000:]
        pytest.fail(f"torchrun did not finish in 600 s; stderr tail:\n{tail.decode(errors='replace')}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = (out / "summary.json").read_text()
    assert '"world": 2' in summary
    assert_same_run(single[mode], out, "lora.safetensors" if mode == "lora" else "model.safetensors")


def test_ray_train_workers_match_one_process(table: Path, single: dict[str, Path], tmp_path: Path,
                                             ray_session) -> None:
    from pipelines.train_ray import main

    out = tmp_path / "ray"
    assert main(["--workers", "2", "--", "--manifest", str(table), *COMMON, *MODES["lora"],
                 "--out", str(out)]) == 0
    assert_same_run(single["lora"], out, "lora.safetensors")

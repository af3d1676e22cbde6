"""What a training run leaves for people: ``loss.csv``, ``loss.png`` and a summary.

``loss.csv`` has one row per optimiser step (global mean loss over every rank's examples,
learning rate, gradient norm before clipping, examples so far, seconds so far, and the
Eq. 6 alphas after the step as mean and largest |alpha| over the blocks, so a user sees
subject disentanglement switch on). A resumed
run first drops rows past the checkpoint's step, so the file never holds a step twice.
"""

from __future__ import annotations

import csv
import json
import resource
import sys
from pathlib import Path
from typing import Any

import torch

COLUMNS = ("step", "loss", "lr", "grad_norm", "examples", "elapsed_s", "alpha_mean_abs", "alpha_max_abs")


class LossLog:
    def __init__(self, out: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(out) / "loss.csv"
        if resume_step is None or not self.path.exists():
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(COLUMNS)
        else:
            rows = [r for r in read_rows(self.path) if int(r["step"]) <= resume_step]
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, COLUMNS)
                writer.writeheader()
                writer.writerows(rows)

    def append(self, step: int, loss: float, lr: float, grad_norm: float, examples: int,
               elapsed: float, alpha: torch.Tensor) -> None:
        size = alpha.detach().abs().float().cpu()
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([step, f"{loss:.8g}", f"{lr:.6g}", f"{grad_norm:.6g}", examples,
                                    f"{elapsed:.3f}", f"{float(size.mean()):.6g}",
                                    f"{float(size.max()):.6g}"])


def read_rows(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def plot(out: str | Path) -> Path | None:
    """``loss.png``: raw loss, a smoothed curve and the learning rate, against the step."""
    rows = read_rows(Path(out) / "loss.csv")
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    smooth, value = [], loss[0]
    for x in loss:  # an EMA whose window grows with the run, so short runs still show a trend
        value = value + (x - value) * max(0.02, 10.0 / len(loss))
        smooth.append(value)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(steps, loss, color="#9ab", linewidth=0.8, label="loss")
    ax.plot(steps, smooth, color="#135", linewidth=1.6, label="smoothed")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss (Eq. 10)")
    if min(loss) > 0 and max(loss) / min(loss) > 20:
        ax.set_yscale("log")
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [float(r["lr"]) for r in rows], color="#c63", linewidth=0.8, label="lr")
    lr_ax.set_ylabel("learning rate", color="#c63")
    ax.legend(loc="upper right")
    fig.tight_layout()
    path = Path(out) / "loss.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak GPU memory allocated (GiB) on CUDA; the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return {"peak_gpu_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                "peak_gpu_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30}
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30}


def write_summary(out: str | Path, summary: dict[str, Any]) -> str:
    """``summary.json`` and the lines printed at the end of a run."""
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    lines = [f"trained {summary['steps_this_run']} steps (step {summary['first_step']} -> "
             f"{summary['last_step']}) in {summary['seconds']:.1f}s: "
             f"{summary['examples_per_s']:.2f} examples/s, {summary['s_per_step']:.3f} s/step"]
    lines.append(f"final loss {summary['final_loss']:.5g} (first {summary['first_loss']:.5g}); "
                 + ", ".join(f"{k} {v:.2f}" for k, v in summary["memory"].items()))
    if summary.get("alpha"):
        alpha = summary["alpha"]
        lines.append(f"Eq. 6 alphas: mean |alpha| {sum(abs(a) for a in alpha) / len(alpha):.4g}, "
                     f"max {max(abs(a) for a in alpha):.4g} over {len(alpha)} blocks")
    if summary.get("skipped"):
        lines.append(f"skipped records: {summary['skipped']}")
    lines.append(f"weights: {summary['weights']}")
    return "\n".join(lines)

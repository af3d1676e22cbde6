"""The score table's summary: per metric the mean over videos and a bootstrap 95% interval,
and the paper's Total Score (Tables 1-2: the mean of the metrics a video set reports).

The paper's tables print Aesthetic near 0.5 while the LAION head scores 1-10 (OpenS2V's
merge ranges it 4-7): we read the paper's column as the LAION score / 10 (an inference from
its values; the paper does not say), and the Total uses it so.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from model.evaluate.scorer import PAPER

PAPER_SCALE = {"aesthetic": 0.1}  # LAION's 1-10 to the paper's table scale (module docstring)


def bootstrap_interval(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean (seeded: the same table gives the same interval)."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return (float(values.mean()), float(values.mean())) if len(values) else (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarize(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """``{metrics: {name: {mean, low, high, videos, not_scored: {status: n}}}, paper_total}``."""
    scored: dict[str, list[float]] = {}
    missing: dict[str, dict[str, int]] = {}
    for row in rows:
        if row["status"] == "kept" and row["value"] is not None:
            scored.setdefault(row["metric"], []).append(float(row["value"]))
        else:
            counts = missing.setdefault(row["metric"], {})
            counts[row["status"]] = counts.get(row["status"], 0) + 1
    metrics = {}
    for name in sorted(set(scored) | set(missing)):
        values = np.asarray(scored.get(name, []))
        low, high = bootstrap_interval(values)
        metrics[name] = {"mean": float(values.mean()) if len(values) else None, "low": low, "high": high,
                         "videos": len(values), "not_scored": missing.get(name, {})}
    paper = [metrics[m]["mean"] * PAPER_SCALE.get(m, 1.0) for m in PAPER
             if m in metrics and metrics[m]["mean"] is not None]
    return {"metrics": metrics, "paper_total": float(np.mean(paper)) if paper else None,
            "paper_metrics": [m for m in PAPER if m in metrics and metrics[m]["mean"] is not None]}


def summary_text(summary: dict[str, Any]) -> str:
    lines = [f"{'metric':<20} {'mean':>9} {'95% interval':>22} {'videos':>7}  not scored"]
    for name, m in summary["metrics"].items():
        mean = "-" if m["mean"] is None else f"{m['mean']:.4f}"
        interval = "-" if m["mean"] is None else f"[{m['low']:.4f}, {m['high']:.4f}]"
        missing = ", ".join(f"{k} {v}" for k, v in m["not_scored"].items())
        lines.append(f"{name:<20} {mean:>9} {interval:>22} {m['videos']:>7}  {missing}")
    if summary["paper_total"] is not None:
        lines.append(f"paper Total Score (mean of {', '.join(summary['paper_metrics'])}): {summary['paper_total']:.4f}")
    notes = summary.get("opens2v_notes") or {}
    if notes.get("substitutes"):
        lines.append(f"OpenS2V total: substitutes on their scale, not their values: {', '.join(notes['substitutes'])}")
    if notes.get("missing"):
        lines.append(f"OpenS2V total: no values for {', '.join(notes['missing'])} (their merge counts 0 for them)")
    return "\n".join(lines)

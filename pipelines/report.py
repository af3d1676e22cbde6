"""The end-of-job report and run.json: rows in, kept, filtered by reason, errors, time."""

from __future__ import annotations

import collections
import json
import sys
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Report:
    stage: str
    inputs_total: int = 0
    skipped: int = 0
    selected: int = 0
    processed: int = 0
    statuses: collections.Counter = field(default_factory=collections.Counter)
    errors: collections.Counter = field(default_factory=collections.Counter)
    empty: int = 0
    seconds: float = 0.0

    def add(self, summary: dict[str, Any]) -> None:
        self.processed += summary["inputs"]
        self.statuses.update(json.loads(summary["statuses"]))
        self.errors.update(json.loads(summary["errors"]))
        self.empty += summary["empty"]

    @property
    def accounted(self) -> bool:
        return self.processed == self.selected

    def as_dict(self) -> dict[str, Any]:
        rows_out = sum(self.statuses.values())
        return {
            "inputs": self.inputs_total, "already_done": self.skipped, "selected": self.selected,
            "processed": self.processed,
            "rows_out": rows_out, "kept": self.statuses.get("kept", 0),
            "filtered": {k: v for k, v in sorted(self.statuses.items()) if k != "kept"},
            "errors": sum(self.errors.values()), "errors_by_type": dict(self.errors),
            "empty": self.empty, "seconds": round(self.seconds, 3),
            "inputs_per_s": round(self.processed / self.seconds, 3) if self.seconds else None,
            "accounted": self.accounted,
        }

    def text(self, table: str) -> str:
        d = self.as_dict()
        lines = [f"== stage {self.stage}: {d['inputs']} inputs, {d['already_done']} already done, "
                 f"{d['processed']} processed in {d['seconds']:.1f} s ({d['inputs_per_s'] or 0:.2f} inputs/s)",
                 f"   {table}: {d['rows_out']} rows written, {d['kept']} kept"]
        for reason, count in d["filtered"].items():
            lines.append(f"   filtered {reason}: {count}")
        lines.append(f"   errors: {d['errors']}" + (f" ({', '.join(f'{k} {v}' for k, v in d['errors_by_type'].items())})"
                                                    if d["errors"] else ""))
        if d["empty"]:
            lines.append(f"   inputs with no output row: {d['empty']}")
        verdict = "every input accounted for" if d["accounted"] else "ACCOUNTING MISMATCH"
        lines.append(f"   {d['processed']} processed = {d['processed'] - d['errors'] - d['empty']} with rows "
                     f"+ {d['errors']} errors + {d['empty']} empty: {verdict}")
        return "\n".join(lines)



PACKAGES = ("magref", "ray", "pyarrow", "av", "torch", "transformers", "diffusers", "scenedetect",
            "opencv-python-headless", "numpy")


def versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape results (no imports, so it is cheap)."""
    from importlib import metadata

    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found

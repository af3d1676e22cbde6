"""One progress display per stage: inputs committed of total, rate, time left.

Fed from the commits ``StageJob.write`` already iterates (one summary per committed
block), so it counts what is durably done, not what Ray has scheduled. ``--progress``:

* ``bar``: a tqdm bar on stderr (``[2/7] clips: 40%|####  | 2/5 [00:10<00:15, 0.20 inputs/s]``);
* ``plain``: a ``magref`` log line at most every ``PLAIN_EVERY_S`` seconds and at the end, for
  logs and ``ray job submit`` output, where a bar's carriage returns are noise;
* ``auto``: a bar when stderr is a terminal, plain lines otherwise; ``off``: nothing.
"""

from __future__ import annotations

import sys
import time

from schemas.command import LOG

PLAIN_EVERY_S = 10.0


class Progress:
    """Counts inputs committed for one stage and shows them as ``mode`` says."""

    def __init__(self, label: str, total: int, mode: str = "auto"):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "plain"
        self.label, self.total, self.mode = label, total, mode
        self.done = self._shown_done = 0
        self._start = self._shown = time.perf_counter()
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit="inputs", file=sys.stderr, dynamic_ncols=True)

    def update(self, inputs: int) -> None:
        self.done += inputs
        if self._bar is not None:
            self._bar.update(inputs)
        elif self.mode == "plain" and time.perf_counter() - self._shown >= PLAIN_EVERY_S:
            self._plain()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "plain" and (self._shown_done != self.done or not self.done):
            self._plain()

    def _plain(self) -> None:
        self._shown = now = time.perf_counter()
        self._shown_done = self.done
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed else 0.0
        left = (self.total - self.done) / rate if rate else float("nan")
        eta = f", {left:.0f} s left" if rate and self.done < self.total else ""
        LOG.info(f"{self.label}: {self.done}/{self.total} inputs committed ({rate:.2f} inputs/s{eta})")

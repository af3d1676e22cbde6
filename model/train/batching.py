"""A deterministic, resumable stream of same-bucket batches for one rank.

Training runs for a number of steps, not epochs, over an endless stream: each epoch is
a seeded permutation of the dataset, rank ``r`` of ``W`` takes positions ``r, r + W,
r + 2W, ...`` of it, and items wait in per-bucket queues until a queue holds a batch.
Because the stream is endless, no rank runs out before another (no DDP/FSDP hang at an
epoch end), and because every choice is a function of ``(seed, epoch, position)`` the
stream's whole state is a few integers plus the indices waiting in queues: a checkpoint
saves them and a resumed run continues with the very next item.

Loading runs ``workers`` items ahead in threads (PyAV decodes without the GIL), always
consumed in order, so prefetching changes speed and never the batches.

A record the dataset cannot load (``BadRecord``) is counted once per sample id, remembered
(not retried in later epochs) and skipped.
"""

from __future__ import annotations

import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

import numpy as np

from model.train.data import BadRecord

MAX_REPORTED = 5  # bad records printed in full; the rest are only counted


class NoUsableSamples(RuntimeError):
    """A whole pass over this rank's share produced no example."""


class Dataset(Protocol):
    def __len__(self) -> int: ...
    def sample_id(self, index: int) -> str: ...
    def load(self, index: int, augmentation: int) -> Any: ...


@dataclass
class StreamState:
    """Where a rank's stream stands: everything a resume needs, JSON-friendly."""

    epoch: int = 0
    cursor: int = 0                     # positions of this epoch's rank share consumed
    pending: dict[str, list[list[int]]] = field(default_factory=dict)  # bucket -> [[index, augmentation]]
    bad: dict[str, str] = field(default_factory=dict)  # sample_id -> reason
    examples: int = 0                   # examples yielded so far

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor, "pending": self.pending,
                "bad": self.bad, "examples": self.examples}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StreamState":
        return cls(int(data["epoch"]), int(data["cursor"]),
                   {k: [list(map(int, p)) for p in v] for k, v in data["pending"].items()},
                   dict(data["bad"]), int(data.get("examples", 0)))

    def skipped_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for reason in self.bad.values():
            counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items()))


def epoch_order(size: int, seed: int, epoch: int) -> np.ndarray:
    """The dataset indices of one epoch, shuffled with a seed of their own."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(size)


class BatchStream:
    """Endless same-bucket batches of ``batch_size`` examples for rank ``rank`` of ``world``."""

    def __init__(self, dataset: Dataset, batch_size: int, augmentation_of: Any, seed: int = 0,
                 rank: int = 0, world: int = 1, workers: int = 0,
                 state: StreamState | None = None, log: Any = None) -> None:
        if len(dataset) == 0:
            raise NoUsableSamples("the training set has no samples")
        if len(dataset) < world:
            raise NoUsableSamples(f"{len(dataset)} samples cannot feed {world} ranks")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.augmentation_of = augmentation_of      # epoch -> augmentation seed
        self.rank, self.world, self.workers = rank, world, workers
        self.state = state or StreamState()
        self.log = log or (lambda message: print(message, file=sys.stderr))

    def _share(self, epoch: int) -> np.ndarray:
        """This rank's indices for ``epoch``: the dataset's own order when it has one (a
        streamed table deals row groups, so a rank reads only its own), else every
        ``world``-th position of a seeded permutation."""
        order = getattr(self.dataset, "epoch_order", None)
        share = order(self.seed, epoch, self.rank, self.world) if order else None
        return share if share is not None else epoch_order(len(self.dataset), self.seed, epoch)[self.rank::self.world]

    def _positions(self) -> Iterator[tuple[int, int, int, int]]:
        """(epoch, cursor after this item, index, augmentation) from the saved position on."""
        epoch, cursor = self.state.epoch, self.state.cursor
        while True:
            share = self._share(epoch)
            augmentation = self.augmentation_of(epoch)
            for position in range(cursor, len(share)):
                yield epoch, position + 1, int(share[position]), augmentation
            epoch, cursor = epoch + 1, 0

    def _loaded(self) -> Iterator[tuple[int, int, int, int, Any]]:
        """Items in order, loaded ``workers`` ahead; bad ones come back as ``BadRecord``."""
        def load(index: int, augmentation: int) -> Any:
            sample_id = self.dataset.sample_id(index)
            if sample_id in self.state.bad:  # known bad: not decoded again in later epochs
                return BadRecord(self.state.bad[sample_id], sample_id, "skipped before")
            try:
                return self.dataset.load(index, augmentation)
            except BadRecord as exc:
                return exc

        positions = self._positions()
        if self.workers <= 0:
            for epoch, cursor, index, aug in positions:
                yield epoch, cursor, index, aug, load(index, aug)
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="magref-data") as pool:
            ahead: deque[tuple[int, int, int, int, Future]] = deque()
            try:
                for epoch, cursor, index, aug in positions:
                    ahead.append((epoch, cursor, index, aug, pool.submit(load, index, aug)))
                    if len(ahead) > 2 * self.workers:
                        e, c, i, a, fut = ahead.popleft()
                        yield e, c, i, a, fut.result()
            finally:
                for *_, fut in ahead:
                    fut.cancel()

    def _record_bad(self, error: BadRecord) -> None:
        if error.sample_id not in self.state.bad:
            self.state.bad[error.sample_id] = error.reason
            if len(self.state.bad) <= MAX_REPORTED:
                self.log(f"skipped ({error.reason}): {error}")

    def __iter__(self) -> Iterator[list[Any]]:
        state = self.state
        queues: dict[str, list[Any]] = {}
        for key, items in list(state.pending.items()):  # a resumed run reloads what waited
            queues[key] = [self.dataset.load(index, aug) for index, aug in items]
        for epoch, cursor, index, aug, item in self._loaded():
            state.epoch, state.cursor = epoch, cursor
            if isinstance(item, BadRecord):
                self._record_bad(item)
                if len(state.bad) >= len(self.dataset):
                    raise NoUsableSamples(
                        f"none of the {len(self.dataset)} samples could be loaded; "
                        f"skipped by reason: {state.skipped_by_reason()}")
                continue
            key = "x".join(map(str, item.bucket))
            queue = queues.setdefault(key, [])
            queue.append(item)
            state.pending.setdefault(key, []).append([index, aug])
            if len(queue) == self.batch_size:
                batch = queues.pop(key)
                state.pending.pop(key)
                state.examples += len(batch)
                yield batch

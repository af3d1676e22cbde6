"""One job per stage per run directory: a lock file taken atomically, stale ones taken over.

Two jobs of one stage on one run directory would delete each other's uncommitted parts
(``ledger.clean_orphans`` runs at start), so a job takes ``RUN/_locks/<stage>.lock``
before it touches anything. The file holds the holder's host, pid, the process's start
time (so a recycled pid is not mistaken for the holder) and when it started.

* Local paths: the file is created with ``O_CREAT | O_EXCL``, which is atomic.
* A lock whose holder is a dead process on this host (a ``kill -9``) is taken over, with
  a line saying so; one held by a live process, or by another host, refuses the job.
* Object stores (``s3://``, ``gs://``) have no atomic create-if-absent through pyarrow:
  there the lock is written, then read back, which stops the usual mistake (a second job
  started by hand) but not two jobs started within the same second. Run one driver per
  stage per run directory there, as the README says.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import pyarrow.fs as pafs

from schemas.io import Location, write_json

LOCKS = "_locks"


class LockHeld(RuntimeError):
    """Another live job holds the stage's lock; the message names it."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    if os.path.isdir("/proc"):
        now = _process_start(pid)
        return now is not None and (started is None or now == started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class StageLock:
    run_root: Location
    stage: str
    held: bool = False

    @property
    def location(self) -> Location:
        return self.run_root.join(LOCKS, f"{self.stage}.lock")

    def acquire(self) -> str | None:
        """Take the lock; returns a note when a stale lock was taken over. Raises ``LockHeld``."""
        note = None
        for _ in range(2):
            if self._create():
                self.held = True
                return note
            holder = self._read()
            if holder is None:  # vanished between our create and read: try again
                continue
            if self._is_stale(holder):
                note = (f"[{self.stage}] took over the lock of a job that is gone "
                        f"(pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')})")
                self.location.fs.delete_file(self.location.path)
                continue
            raise LockHeld(
                f"{self.run_root.uri()}: stage {self.stage!r} is already running (pid {holder.get('pid')} on "
                f"{holder.get('host')}, started {holder.get('started')}); wait for it to finish, or, if you "
                f"are sure that job is gone, delete {self.location.uri()}")
        raise LockHeld(f"{self.location.uri()}: could not take the lock (it keeps changing hands)")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = self._read()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            try:
                self.location.fs.delete_file(self.location.path)
            except (FileNotFoundError, OSError):
                pass

    def _record(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid()),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "argv": sys.argv}

    def _create(self) -> bool:
        loc = self.location
        data = json.dumps(self._record()).encode()
        loc.fs.create_dir(os.path.dirname(loc.path), recursive=True)
        if isinstance(loc.fs, pafs.LocalFileSystem):
            try:
                fd = os.open(loc.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return True
        if loc.exists():  # object stores: best effort (see the module docstring)
            return False
        with loc.fs.open_output_stream(loc.path) as stream:
            stream.write(data)
        holder = self._read()
        return bool(holder) and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()

    def _read(self) -> dict[str, Any] | None:
        try:
            with self.location.fs.open_input_stream(self.location.path) as stream:
                raw = stream.read().decode("utf-8", errors="replace")
        except (FileNotFoundError, OSError):
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return {"host": "?", "pid": None, "started": "unknown (unreadable lock file)"}

    def _is_stale(self, holder: dict[str, Any]) -> bool:
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False
        return not _alive(holder["pid"], holder.get("process_start"))


RUN_RECORD = "run.json"


def update_run_record(run_root: Location, change: Callable[[dict[str, Any]], None], wait_s: float = 120.0) -> None:
    """Read ``RUN/run.json``, apply ``change`` to it and write it back, under a run-level lock.

    Stages may run at once (2 and 3 do); each one's read-modify-write of the shared record
    holds ``RUN/_locks/run.json.lock``, so neither loses the other's entry. The lock is held
    for milliseconds: a second writer waits for it (a dead holder's lock is taken over).
    """
    lock = StageLock(run_root, RUN_RECORD)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            lock.acquire()
            break
        except LockHeld:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    try:
        path = run_root.join(RUN_RECORD)
        state: dict[str, Any] = {"stages": {}}
        if path.exists():
            with run_root.fs.open_input_stream(path.path) as stream:
                state = json.loads(stream.read().decode() or "{}") or {"stages": {}}
        change(state)
        write_json(run_root.fs, path.path, state)
    finally:
        lock.release()

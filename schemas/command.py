"""What every magref command shares: the ``magref`` logger and the one-line error handler.

It lives here, in a package that imports neither torch nor Ray, because both ``pipelines/``
and ``model/`` need it and ``model/`` may not import ``pipelines``. Every entry point
(``python pipelines/...``, ``python -m model.train``, ``python -m model.sample``, the
``magref`` console script) runs its ``main`` through :func:`run_command`:

* a user's mistake (an exception of a class the command lists as a user error, or
  :class:`UserError`) is one stderr line, ``PROG: error: MESSAGE``, and exit code 2;
* anything else is a bug and keeps its traceback.

Project messages go through ``logging.getLogger("magref")`` (or a child), configured once
by :func:`configure_logging`: plain ``message`` lines, INFO and below on stdout (with the
job's report), warnings and errors on stderr; DEBUG with ``--verbose``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Sequence

LOG = logging.getLogger("magref")


class UserError(Exception):
    """A mistake the user can fix (missing table, wrong path, bad key): one line, exit 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the fix (usage stays in --help), exit 2."""

    def error(self, message: str):  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _ConsoleHandler(logging.StreamHandler):
    """INFO to stdout beside the job's report, warnings and errors to stderr; always the streams
    ``sys`` holds now (a test's capture, a redirected stream), not the ones at configuration."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self._level = logging.INFO

    def emit(self, record: logging.LogRecord) -> None:
        self._level = record.levelno
        super().emit(record)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout if self._level < logging.WARNING else sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler assigns it; the property always answers sys.stderr
        pass


def configure_logging(verbose: bool = False) -> logging.Logger:
    """Give the ``magref`` logger one console handler (once per process) and its level."""
    if not any(isinstance(h, _ConsoleHandler) for h in LOG.handlers):
        handler = _ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOG.addHandler(handler)
        LOG.propagate = False
    LOG.setLevel(logging.DEBUG if verbose else logging.INFO)
    return LOG


def program_name(argv0: str | None = None) -> str:
    """How the user called us: a script's file name, or ``python -m PACKAGE`` for a
    ``__main__.py`` (``python -m model.train`` would otherwise say ``__main__.py``)."""
    path = os.path.abspath(argv0 if argv0 is not None else (sys.argv[0] or "magref"))
    name = os.path.basename(path)
    if name != "__main__.py":
        return name or "magref"
    parts, folder = [], os.path.dirname(path)
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        parts.insert(0, os.path.basename(folder))
        folder = os.path.dirname(folder)
    return f"python -m {'.'.join(parts)}" if parts else name


def run_command(main: Callable[[list[str] | None], int], argv: Sequence[str] | None = None,
                user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run ``main(argv)``: a user error becomes one line on stderr and exit code 2."""
    configure_logging()
    try:
        return main(None if argv is None else list(argv))
    except (UserError, *user_errors) as err:
        prog = program_name()
        text = str(err).strip()
        message = text.splitlines()[0] if text else type(err).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2

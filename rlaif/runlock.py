"""One writer per run directory: an exclusive ``flock`` on ``<run dir>/.rlaif.lock``.

Every pipeline command (``rlaif run``, a single stage, ``accelerate launch`` of a stage) takes
it for the life of the command; a second writer gets one line naming the run directory and the
holder's pid (exit 2). Read-only commands (``rlaif show``, ``labels stats``, the viewer) never
take it. The kernel drops the lock when the holder exits, however it exits (kill -9 included),
so a stale lock file never needs a hand repair.

Within one process the lock is re-entrant (a library user or a test may open the same run
twice), and processes started by the holder (``accelerate launch`` workers) inherit it through
the ``RLAIF_RUNLOCK_HELD`` environment variable.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from rlaif.errors import RlaifError

LOCK_NAME = ".rlaif.lock"
HELD_ENV = "RLAIF_RUNLOCK_HELD"

_HELD: dict[str, list] = {}  # resolved run dir -> [open lock file, count]


class RunLock:
    def __init__(self, key: str):
        self.key = key
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        held = _HELD.get(self.key)
        if held is None:
            return
        held[1] -= 1
        if held[1] <= 0:
            del _HELD[self.key]
            if os.environ.get(HELD_ENV) == self.key:
                del os.environ[HELD_ENV]
            held[0].close()  # closing the descriptor releases the flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(f: IO[str]) -> str:
    try:
        f.seek(0)
        pid = f.read(32).strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


def acquire(workdir: Path | str) -> RunLock:
    """Take the run directory's write lock, or raise RlaifError (exit 2) naming the holder."""
    wd = Path(workdir)
    key = str(wd.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        return RunLock(key)
    if os.environ.get(HELD_ENV) == key:  # a worker started by the holder
        return RunLock("")
    try:
        f = open(wd / LOCK_NAME, "a+")
    except OSError as e:
        raise RlaifError(f"{wd}: cannot write the run directory ({e.strerror}); "
                         "check its permissions or pick another --workdir") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        who = _holder(f)
        f.close()
        raise RlaifError(f"{wd}: run directory is in use by another rlaif command ({who}); "
                         "wait for it to finish or use another --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _HELD[key] = [f, 1]
    os.environ[HELD_ENV] = key
    return RunLock(key)

"""The viewer's writes to the run store: made in the order the keys were pressed, none ever dropped.

Another process may hold the run store's write lock for a while: `labels import` swapping in a large
file, a judge stage replacing its AI pairs, `rlaif run` storing its prompts. SQLite refuses a write
that waited longer than the connection's busy timeout ("database is locked"). The viewer waited 30 s
with a frozen screen and then failed, the verdict lost. Now a write waits ``BUSY_S`` (a judge batch's
commit is shorter); if the store is still busy the write is kept, the status bar counts it, and it is
retried every ``RETRY_S`` (each try waits only ``RETRY_WAIT_S``: the screen stays live) in order, the
writes after it (a note, the next verdicts) queued behind it without a try of their own, so each
applies to what was written before it, as it would have. Undo takes back the newest write: one still
kept is dropped unwritten, else the newest stored one is undone (kept too, if the store is busy).
Quitting waits until every kept write is stored.

A kept write is also journaled, fsync'd, before the key returns (rlaif/viewer/journal.py): a viewer killed
before the retry went in loses nothing, the next `rlaif view` (or `rlaif run`) writes it.

A write (``journal.Write``) reads what it needs and then writes in one transaction, so a busy store
leaves nothing half done and the retry starts it again.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from rlaif.layout import RunLayout
from rlaif.store import Store, is_busy
from rlaif.viewer.journal import Journal, Write

BUSY_S = 0.5  # how long a write waits for another process's write transaction before it is kept
RETRY_S = 1.0  # how often kept writes are tried again
RETRY_WAIT_S = 0.05  # how long such a try waits


class Kept(NamedTuple):
    write: Write
    then: Callable[[Any], None]  # called with the write's result once it is stored
    key: str | None  # the item it is about; None: an undo (not dropped by a later undo)
    seq: int | None = None  # its journal entry (None: not journaled, or the journal could not be written)
    at: int = 0  # the journal's length before its entry


class Writes:
    """Store writes in order; one that finds the store busy waits here, journaled, with every write after it."""

    def __init__(self, store: Store, journal: Journal | None = None) -> None:
        self.store = store
        self.journal = journal
        self.journal_error: OSError | None = None  # the last failure to journal a kept write
        self._queue: deque[Kept] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def submit(self, write: Write, then: Callable[[Any], None], key: str | None) -> bool:
        """Run ``write(store)`` and ``then(its result)`` now, unless the store is busy or earlier writes wait.
        True: written; False: kept (and journaled), to be written by a later ``flush``."""
        self._queue.append(Kept(write, then, key))
        if len(self._queue) == 1 and self.flush(BUSY_S):
            return True
        if self.journal is not None:
            try:
                seq, at = self.journal.append(write)
            except OSError as e:  # kept in memory only, as before the journal (the app says so)
                self.journal_error = e
            else:
                self._queue[-1] = self._queue[-1]._replace(seq=seq, at=at)
        return False

    def drop_newest(self) -> str | None:
        """Drop the newest kept write, unwritten (and its journal entry), and return its item's key (None: no
        kept write, or the newest is an undo)."""
        if self._queue and self._queue[-1].key is not None:
            k = self._queue.pop()
            if k.seq is not None:
                self.journal.cut(k.at)
            return k.key
        return None

    def keys(self) -> set[str]:
        """The items kept writes are about (undos left out)."""
        return {k.key for k in self._queue if k.key is not None}

    def undos(self) -> int:
        """How many kept writes are undos."""
        return sum(k.key is None for k in self._queue)

    def _apply(self, k: Kept) -> Any:
        if k.seq is None:
            return k.write(self.store)
        # the write and its entry's mark: one transaction; dated by its key press, as a replay of it would be
        with self.store.journaled(self.journal.name, k.seq, k.write.at):
            return k.write(self.store)

    def flush(self, wait: float = RETRY_WAIT_S) -> bool:
        """Write the kept writes in order, as far as the store lets (the first waits up to ``wait`` seconds
        for another process's transaction); True when none is left (the journal is then emptied)."""
        self.store.set_busy_timeout(wait)
        try:
            while self._queue:
                head = self._queue[0]
                try:
                    result = self._apply(head)
                except sqlite3.OperationalError as e:
                    if not is_busy(e):
                        raise
                    return False
                self._queue.popleft()
                head.then(result)
            if self.journal is not None:
                self.journal.clear()
            return True
        finally:
            self.store.set_busy_timeout(BUSY_S)

    def close(self) -> None:
        """The session ends: its journal goes if nothing is kept; else it stays for the next opening to replay."""
        if self.journal is not None:
            self.journal.close(self.store, remove=not self._queue)


class KeepsWrites:
    """Mixed into the viewer's Textual apps (before ``App``): ``start_writes`` in ``__init__``, ``retry_every``
    in ``on_mount``; every store write through ``write``, undo through ``undo_newest``; ``writes_waiting()``
    for the status bar; ``writes_changed()`` repaints when a write is kept or kept writes went in."""

    writes: Writes

    def start_writes(self, store: Store) -> None:
        store.set_busy_timeout(BUSY_S)
        self.writes = Writes(store, Journal(RunLayout.of_store(store.path).viewer_journals))
        self._quit_when_saved = False

    notice: str | None = None  # said once the screen is up (`rlaif view`: writes replayed from a journal)

    def retry_every(self) -> None:
        self.set_interval(RETRY_S, self.retry_writes)  # type: ignore[attr-defined]
        if self.notice:
            self.notify(self.notice, timeout=6)  # type: ignore[attr-defined]

    def write(self, write: Write, then: Callable[[Any], None], key: str | None) -> bool:
        """Store ``write`` now or keep it (``key``: the item it is about; None for an undo)."""
        waiting = len(self.writes)
        failed = self.writes.journal_error
        done = self.writes.submit(write, then, key)
        if not done:
            if self.writes.journal_error is not failed:
                self.notify(f"the run store is busy and the journal could not be written "  # type: ignore[attr-defined]
                            f"({self.writes.journal_error}): kept in memory only; do not close the viewer "
                            "before it is saved", severity="error", timeout=10)
            elif not waiting:
                self.notify("the run store is busy (another process is writing it): kept, and saved as soon "  # type: ignore[attr-defined]
                            "as it is free", timeout=4)
            self.writes_changed()
        return done

    def undo_newest(self, stack: list, undo: Callable[[Any], Write], then: Callable[[Any], None]) -> str | None:
        """Take back this session's newest write: a kept one is dropped unwritten; else ``undo(entry)`` undoes the
        newest entry of the undo ``stack`` still standing (after the undos already kept), now or kept; once it is
        stored the entry leaves the stack and goes to ``then``. Returns the key of the item taken back (None:
        nothing to undo)."""
        key = self.writes.drop_newest()
        if key is not None:
            self.notify("undid a write that was not saved yet", timeout=2)  # type: ignore[attr-defined]
            self.writes_changed()
            return key
        standing = len(stack) - self.writes.undos()
        if standing <= 0:
            self.notify("nothing to undo in this session", timeout=2)  # type: ignore[attr-defined]
            return None
        entry = stack[standing - 1]

        def undone(_: Any) -> None:
            # the newest entry by then: kept writes go in in order, and only stored writes are on the stack
            del stack[max(i for i, e in enumerate(stack) if e is entry)]
            then(entry)

        self.write(undo(entry), undone, None)
        return entry.key

    def retry_writes(self) -> None:
        if not self.writes:
            return
        before = len(self.writes)
        done = self.writes.flush()
        if len(self.writes) < before:
            self.writes_changed()
        if done and self._quit_when_saved:
            self.writes.close()
            self.exit()  # type: ignore[attr-defined]

    def writes_changed(self) -> None:
        """A write was kept, or kept writes went in: the app repaints its status and what they changed."""

    def writes_waiting(self) -> str:
        n = len(self.writes)
        return f" │ {n} not saved yet (store busy; retrying)" if n else ""

    async def action_quit(self) -> None:
        if self.writes and not self.writes.flush():
            self._quit_when_saved = True
            self.notify(f"{len(self.writes)} write(s) not saved yet: the run store is busy (another process is "  # type: ignore[attr-defined]
                        "writing it); quitting as soon as they are saved", timeout=6)
            return
        self.writes.close()
        self.exit()  # type: ignore[attr-defined]

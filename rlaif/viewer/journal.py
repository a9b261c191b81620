"""The viewer's kept writes on disk: a verdict the store could not take yet survives a kill.

A write the run store refuses while another process holds its lock is kept and retried
(rlaif/viewer/writes.py). Kept in memory only, a SIGKILL or a power cut before the retry lost it. Now
each kept write is appended to the session's journal, ``RUN/viewer-journal/<session>.jsonl``
(``RunLayout.viewer_journals``), and fsync'd before the key returns: one JSON line
``{"seq": N, "op": ..., "args": {...}, "t": KEY_PRESS_TIME}`` per write (``Write``), in the order the keys were
pressed.

- When a kept write goes in, the same transaction marks its ``seq`` stored (``Store.journaled``), so
  a kill between the two never writes it twice. Once no write is kept the file is emptied; a session
  that ends with nothing kept removes it.
- Undo of a kept write cuts its line off the journal (it is the newest line).
- The session holds an exclusive ``flock`` on its journal; the kernel drops it however the session
  ends. ``replay`` (the next `rlaif view`, `rlaif run`) writes the unstored entries of every journal
  nobody holds into the store, in order, each once, then removes the file: the verdicts then show
  as saved. A journaled write is stored dated by its key press, not by when it went in, and a replayed one
  whose row (same comparison or response, same ``viewer:`` source) is stored with a later time is passed by:
  two viewers of the same annotator on one run, the newer verdict, stored directly by the other, stands.
  A last line cut short by a kill mid-append is ignored (it never reached the disk whole,
  so its key never returned); any other bad line is an error naming the file and line.

Plain JSON lines and a lock file rather than a second SQLite database: the point is a write that does
not need the run store's lock, and an append of one line with fsync is the smallest such write.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import secrets
import sqlite3
import stat
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rlaif import safeio
from rlaif.errors import RlaifError
from rlaif.layout import RunLayout
from rlaif.records import Feedback, HumanLabel
from rlaif.store import Store, is_busy
from rlaif.vocab import FEEDBACK_KINDS, LABELS, VIEWER

SUFFIX = ".jsonl"
_NEW = ".new"  # a journal being created: locked first, then renamed to its name (a replay never sees it unlocked)
_NEW_STALE_S = 60  # a .new file this old was left by a kill (its maker locks and renames it within microseconds)
_RECORDS = {"HumanLabel": HumanLabel, "Feedback": Feedback}
_RECORD = "$record"  # the key naming a record's type in an encoded argument


def _ops() -> dict[str, Any]:
    """Each write the viewer makes, by name: fn(store, **args) -> what its screen's undo needs."""
    from rlaif.viewer import rating as R
    from rlaif.viewer import verdicts as V

    return {"label": V.put_label, "note": V.put_note, "undo-label": V.undo_label,
            "feedback": R.put_feedback, "comment": R.put_comment, "undo-feedback": R.undo_feedback}


def _encode(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and type(v).__name__ in _RECORDS:
        return {_RECORD: type(v).__name__, **{f.name: getattr(v, f.name) for f in dataclasses.fields(v)}}
    return v


def _decode(v: Any) -> Any:
    if isinstance(v, dict) and _RECORD in v:
        fields = dict(v)
        return _RECORDS[fields.pop(_RECORD)](**fields)
    return v


def _conforms(v: Any, hint: Any) -> bool:
    """Whether the decoded value ``v`` is of the annotated type ``hint`` (the few kinds an op's arguments have)."""
    if typing.get_args(hint):  # X | None
        return any(_conforms(v, h) for h in typing.get_args(hint))
    if hint is type(None):
        return v is None
    if hint in (int, float):  # JSON's numbers; a bool is not one
        return isinstance(v, (int, float) if hint is float else int) and not isinstance(v, bool)
    if dataclasses.is_dataclass(hint):
        return isinstance(v, hint) and all(_conforms(getattr(v, n), h) for n, h in typing.get_type_hints(hint).items())
    return isinstance(v, hint)


def _check(op: str, args: dict[str, Any]) -> None:
    """ValueError unless ``args`` are the arguments ``op`` takes, each of its type, and the write is one a viewer
    makes: its rows' sources are viewer sources, its label words and feedback kinds known ones. A journal is a
    file in the run directory: what it holds is checked before any of it goes into the store."""
    hints = typing.get_type_hints(_ops()[op])
    want = {k: h for k, h in hints.items() if k not in ("store", "return")}
    if set(args) != set(want):
        raise ValueError(f"{op!r} takes {', '.join(sorted(want))}")
    for k, v in args.items():
        if not _conforms(v, want[k]):
            raise ValueError(f"{op!r}: {k} is not {getattr(want[k], '__name__', want[k])}")
        rows = [v] if isinstance(v, (HumanLabel, Feedback)) else []
        if k == "source" and not v.startswith(VIEWER) or any(not r.source.startswith(VIEWER) for r in rows):
            raise ValueError(f"{op!r}: a source that is not {VIEWER}ANNOTATOR")
        if any(isinstance(r, HumanLabel) and r.label not in LABELS or isinstance(r, Feedback)
               and r.kind not in FEEDBACK_KINDS for r in rows):
            raise ValueError(f"{op!r}: an unknown label word or feedback kind")


def _target(op: str, args: dict[str, Any]) -> tuple[bool, str, str]:
    """The row a write changes: (a human label, not feedback; its key; its source)."""
    row = args.get("label", args.get("feedback"))
    key, source = (row.key, row.source) if row is not None else (args["key"], args["source"])
    return op in ("label", "note", "undo-label"), key, source


@dataclass(frozen=True)
class Write:
    """One store write of the viewer, as data: ``write(store)`` makes it; the journal keeps it as JSON. ``at``:
    when its key was pressed (None: a journal line from before entries were timed)."""

    op: str
    args: dict[str, Any]
    at: float | None = field(default_factory=time.time, compare=False)

    def __call__(self, store: Store) -> Any:
        return _ops()[self.op](store, **self.args)

    def superseded(self, store: Store) -> bool:
        """Whether the row this write changes is stored with a later time than its key press: another session
        (the same annotator in a second viewer) stored a newer verdict there directly meanwhile. Such a write is
        not replayed over it (``replay``): the newest verdict stands, whichever order sessions are replayed in,
        since a journaled write is dated by its key press (``Store.journaled``'s ``at``)."""
        if self.at is None:
            return False
        is_label, key, source = _target(self.op, self.args)
        row = store.human_label(key, source) if is_label else store.feedback_from(key, source)
        return row is not None and row.created_at is not None and row.created_at > self.at

    def line(self, seq: int) -> bytes:
        entry = {"seq": seq, "op": self.op, "args": {k: _encode(v) for k, v in self.args.items()}}
        if self.at is not None:
            entry["t"] = self.at
        return (json.dumps(entry, ensure_ascii=False) + "\n").encode()

    @classmethod
    def parse(cls, raw: bytes, where: str) -> tuple[int, Write]:
        """(seq, write) of a journal line (``where``: its file:line); ValueError, KeyError or TypeError when it is
        not one, RlaifError when it is hostile JSON (nested too deep, a lone surrogate)."""
        obj = safeio.loads_bounded(raw.decode("utf-8"), where)
        seq, op, args, at = obj["seq"], obj["op"], obj["args"], obj.get("t")
        if type(seq) is not int or seq < 1 or op not in _ops() or not isinstance(args, dict):
            raise ValueError("not a journal entry")
        if at is not None and (type(at) not in (int, float) or not math.isfinite(at) or at <= 0):
            raise ValueError("t is not a time")
        args = {k: _decode(v) for k, v in args.items()}
        _check(op, args)
        return seq, cls(op, args, at)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The journal of one viewer session in ``directory``; the file appears with the first kept write."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.name: str | None = None
        self._f: IO[bytes] | None = None
        self._seq = 0

    @property
    def path(self) -> Path | None:
        return self.dir / (self.name + SUFFIX) if self.name else None

    def _open(self) -> IO[bytes]:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"  # sorts in the order sessions began
        new = self.dir / (name + _NEW)
        f = open(new, "xb", buffering=0)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # a file just made: nobody else holds it
            os.rename(new, self.dir / (name + SUFFIX))
            _fsync_dir(self.dir)
        except BaseException:
            f.close()
            new.unlink(missing_ok=True)
            raise
        self.name, self._f = name, f
        return f

    def append(self, write: Write) -> tuple[int, int]:
        """Add ``write`` and fsync it: (its seq, the journal's length before it, for ``cut``). OSError: the
        journal is as it was (a partly written line is cut off again)."""
        f = self._f if self._f is not None else self._open()
        at = f.seek(0, os.SEEK_END)
        data = memoryview(write.line(self._seq + 1))
        try:
            while data:  # an unbuffered write may take part of it
                data = data[f.write(data):]
            os.fsync(f.fileno())
        except OSError:
            self.cut(at)
            raise
        self._seq += 1
        return self._seq, at

    def cut(self, at: int) -> None:
        """Drop the journal's lines from byte ``at`` on (an undone kept write: the newest line)."""
        if self._f is not None:
            self._f.truncate(at)
            os.fsync(self._f.fileno())

    def clear(self) -> None:
        """Every entry is stored: empty the file (the next entries go on numbering after the last)."""
        if self._f is not None and self._f.seek(0, os.SEEK_END):
            self.cut(0)

    def close(self, store: Store, remove: bool) -> None:
        """End the session: ``remove`` (nothing kept) deletes the file and its mark; else it stays, unlocked, for
        the next ``replay``."""
        if self._f is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        self._f.close()
        self._f = None
        if remove:
            _forget(store, self.name)


def _forget(store: Store, name: str) -> None:
    """Delete a removed journal's mark; a busy store keeps it (a stale mark of a name never used again)."""
    try:
        store.forget_journal(name)
    except sqlite3.OperationalError as e:
        if not is_busy(e):
            raise


_MOVE_IT = ("the file holds verdicts a viewer kept while the store was busy: move it out of the run directory to "
            "open the run without them")


def _entries(path: Path, f: IO[bytes]) -> list[tuple[int, Write]]:
    """The entries of a journal in order, each checked (``Write.parse``), their seqs increasing; a last line cut
    short (a kill mid-append) is left out. Bounded like any file read (rlaif/safeio.py): the file's size, each
    line's."""
    limit, line_limit = safeio.max_file_bytes(), safeio.max_line_bytes()
    data = f.read(limit + 1)
    if len(data) > limit:
        raise RlaifError(f"{path}: viewer journal is over the limit of {limit:,} bytes (raise RLAIF_MAX_FILE_BYTES); "
                         + _MOVE_IT)
    # Each entry is one write of its line and newline: a kill mid-append leaves a last line without its newline
    # (the key never returned). It is what follows the last newline, left out here.
    *lines, _torn = data.split(b"\n")
    out: list[tuple[int, Write]] = []
    for n, raw in enumerate(lines, 1):
        where = f"{path}:{n}"
        if len(raw) > line_limit:
            raise RlaifError(f"{where}: viewer journal entry is over the limit of {line_limit:,} bytes (raise "
                             "RLAIF_MAX_LINE_BYTES); " + _MOVE_IT)
        try:
            seq, write = Write.parse(raw, where)
            if out and seq <= out[-1][0]:
                raise ValueError(f"seq {seq} after {out[-1][0]}")
        except (ValueError, KeyError, TypeError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise RlaifError(f"{where}: not a viewer journal entry ({str(e)[:120]}); " + _MOVE_IT) from None
        except RlaifError as e:
            raise RlaifError(f"{e}; " + _MOVE_IT) from None
        out.append((seq, write))
    return out


def _open_journal(path: Path) -> IO[bytes] | None:
    """``path`` opened for reading, never blocking (a FIFO put in its place); None when it is gone (replayed by
    another process meanwhile). RlaifError when it is not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:  # a symbolic link (ELOOP), no permission
        raise RlaifError(f"{path}: cannot read the viewer journal ({e.strerror}); " + _MOVE_IT) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO, a directory, a device
        os.close(fd)
        raise RlaifError(f"{path}: not a regular file, so not a viewer journal; " + _MOVE_IT)
    return os.fdopen(fd, "rb")


def pending(layout: RunLayout, store: Store) -> int:
    """How many journaled writes the store does not hold yet (a running viewer's included: it stores its own as
    the store frees; an ended one's wait for ``replay``). Reads only: no lock is taken (a shared one would make a
    concurrent ``replay`` pass the journal by), nothing is written; a bad journal is ``replay``'s error."""
    d = layout.viewer_journals
    if not d.is_dir():
        return 0
    n = 0
    for path in sorted(d.iterdir()):
        if path.suffix != SUFFIX:
            continue
        f = _open_journal(path)
        if f is None:  # replayed by another process meanwhile
            continue
        with f:  # the entries first, then the mark: an entry a live viewer stores meanwhile is not counted
            seqs = [seq for seq, _ in _entries(path, f)]
        stored = store.journal_stored(path.stem)
        n += sum(seq > stored for seq in seqs)
    return n


def replay(layout: RunLayout, store: Store) -> int:
    """Write into ``store`` what the journals of ended viewer sessions hold and it does not, in the order the
    sessions began and their keys were pressed, each entry once; remove those journals. A journal a running
    viewer holds is left to it. A write whose row is stored with a time later than its key press is passed by
    (``Write.superseded``: a second viewer of the same annotator stored a newer verdict). Returns how many writes
    went in. RlaifError (exit 1) when the store stays busy past its busy timeout: nothing is lost, the next
    opening replays."""
    d = layout.viewer_journals
    if not d.is_dir():
        return 0
    n = 0
    for path in sorted(d.iterdir()):
        if path.suffix not in (SUFFIX, _NEW):
            continue
        f = _open_journal(path)
        if f is None:  # replayed by another process meanwhile
            continue
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running viewer's: it stores its own
            if os.fstat(f.fileno()).st_nlink == 0:
                continue  # replayed and removed by another process meanwhile
            if path.suffix == _NEW:  # a session killed while making its journal (renamed at once): nothing in it
                if time.time() - os.fstat(f.fileno()).st_mtime > _NEW_STALE_S:
                    path.unlink()
                continue
            name = path.stem
            try:
                stored = store.journal_stored(name)
                for seq, write in _entries(path, f):
                    if seq > stored:
                        with store.journaled(name, seq, write.at):
                            if write.superseded(store):  # read in the write transaction: nothing slips between
                                continue
                            write(store)
                        n += 1
            except sqlite3.OperationalError as e:
                if not is_busy(e):
                    raise
                raise RlaifError(f"{store.path}: another process kept the run store busy for {store.busy_timeout:g} s; "
                                 f"the writes a viewer kept in {path} are not all stored yet (nothing is lost): "
                                 "try again", exit_code=1) from None
            path.unlink()
            _fsync_dir(d)
        _forget(store, name)
    return n

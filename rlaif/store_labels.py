"""The ``Store`` methods of the human labels and the human feedback (``self.db`` is the store's connection):
the only SQL on those two tables. One row per (pair_key, source) and per (feedback_key, source). Also the
transaction a viewer's journaled write goes in with its journal mark (rlaif/viewer/journal.py)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from rlaif.errors import RlaifError
from rlaif.records import Feedback, HumanLabel

_JOURNAL_MARK = "viewer_journal:"  # meta key + a viewer journal's name -> the last of its entries stored
IN_CHUNK = 500  # ids bound in one ``IN (...)``: under SQLite's limit on bound parameters


def is_busy(e: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds the lock past the busy timeout (not a damaged,
    read-only or full store)."""
    return getattr(e, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) \
        or "database is locked" in str(e)


def _feedback_row(f: Feedback, now: float) -> tuple:
    return (f.key, f.prompt, f.completion, f.kind, f.value, f.scale, f.source, f.annotator, f.comment, now)


class LabelQueries:
    db: sqlite3.Connection
    path: Path
    busy_timeout: float
    _dated: float | None = None  # the time the labels and feedback written now are dated (``journaled``'s ``at``)

    def _now(self) -> float:
        return self._dated if self._dated is not None else time.time()

    # ---------------------------------------------------------- human labels
    # One row per (pair_key, source): a second label from the same source replaces the first.
    # Every write below is its own short transaction (the viewer writes one verdict at a time).
    _LABEL_COLS = "prompt, chosen, rejected, label, source, annotator, note, created_at"
    _ON_LABEL_CONFLICT = """ON CONFLICT(pair_key, source) DO UPDATE SET {prompt}chosen=excluded.chosen,
                       rejected=excluded.rejected, label=excluded.label, annotator=excluded.annotator,
                       note=excluded.note, created_at=excluded.created_at"""
    _UPSERT_LABEL = f"""INSERT INTO human_labels(pair_key, {_LABEL_COLS}) VALUES (?,?,?,?,?,?,?,?,?)
                       {_ON_LABEL_CONFLICT}"""

    def add_human_labels(self, labels: Iterable[HumanLabel]) -> int:
        """Upsert ``labels`` in one transaction; returns how many. For labels already in hand (a viewer
        verdict, the config's labels file); a file being read goes in through ``import_human_labels``."""
        now = self._now()
        rows = [(h.key, h.prompt, h.chosen, h.rejected, h.label, h.source, h.annotator, h.note, now) for h in labels]
        with self.db:
            self.db.executemany(self._UPSERT_LABEL.format(prompt=""), rows)
        return len(rows)

    # `labels import`: the labels are staged in TEMP tables (this connection's own temporary database, which
    # takes no lock on the run store) while the file is read and checked, then go in with one INSERT ... SELECT
    # in one transaction. Why staged, and why one transaction:
    # - Reading a large file is most of an import (about 30 us of Python per record); written as it was read,
    #   the run store's write lock was held all that time (58.7 s at 1M labels), longer than another process's
    #   busy timeout (30 s): a viewer verdict given meanwhile failed with "database is locked".
    # - One transaction keeps the guarantee that a failed import leaves nothing: a bad record, Ctrl-C or a kill
    #   while reading touches only the TEMP tables (gone with the connection); the swap is all or nothing.
    #   Committing in batches would bound the lock but show a half import to a concurrent `rlaif run` and leave
    #   one after a kill. The swap is SQLite's own copy, no Python per row: 12.2 s at 1M labels, 0.7 s at 100k
    #   (bench/lock_hold.py); a writer that finds the store busy meanwhile waits for it (30 s), and the viewer
    #   keeps such a verdict and retries it (rlaif/viewer/writes.py), never drops it.
    # The TEMP tables go with the connection (`labels import` closes it at once); an import on a connection that
    # imported before drops the earlier ones first (dropping a million staged rows costs seconds: not paid twice).
    _STAGE = """DROP TABLE IF EXISTS temp.import_labels; DROP TABLE IF EXISTS temp.import_feedback;
                CREATE TEMP TABLE import_labels(pair_key, prompt, chosen, rejected, label, source, annotator, note,
                                                created_at);
                CREATE TEMP TABLE import_feedback(feedback_key, prompt, completion, kind, value, scale, source,
                                                  annotator, comment, created_at);"""

    def import_human_labels(self, labels: Iterable[HumanLabel],
                            then_feedback: Callable[[], Iterable[Feedback]] | None = None,
                            supersede: tuple[Iterable[str], str] | None = None,
                            copies: tuple[Iterable[str], int] = ((), 0)) -> int:
        """Upsert ``labels`` (streamed), then the feedback ``then_feedback()`` gives (known once the
        labels are read), all or nothing: an error from either leaves the store as it was. Returns how
        many labels were read. ``supersede`` (old prefixes, new prefix): then delete every label and feedback
        whose source is ``old + REST`` for one of the old prefixes where the same one (same key) is now stored
        as ``new + REST`` (a file imported again with the other ``--human`` choice, or into a run that stored
        its records under the bare file name). ``copies`` (starts, hash length): also delete, whole, each group
        of records (one source) whose source is ``start + HASH:REST`` (HASH that many characters, the source not
        the new one's) where the new prefix's ``new + REST`` holds the same comparisons or responses (same keys,
        as many): the same file imported from another path (moved, or through another folder), superseded as
        its own import at the same path is. The run store's write lock is held
        only for the final copy, not while ``labels`` are read (see above)."""
        now, n = time.time(), 0

        def rows():
            nonlocal n
            for h in labels:
                n += 1
                yield (h.key, h.prompt, h.chosen, h.rejected, h.label, h.source, h.annotator, h.note, now)

        # A large page cache while a file of labels goes in: the (pair_key, source) index takes its inserts in
        # hash order, and with SQLite's default 2 MB cache 1M labels spend a third of their time re-reading
        # index pages (bench/scale.py). The cache only grows as far as it is used.
        cache = self.db.execute("PRAGMA cache_size").fetchone()[0]
        self.db.execute("PRAGMA cache_size=-131072")  # 128 MB
        try:
            self.db.executescript(self._STAGE)
            try:
                with self.db:  # writes the TEMP tables only: no lock on the run store
                    self.db.executemany("INSERT INTO temp.import_labels VALUES (?,?,?,?,?,?,?,?,?)", rows())
                    if then_feedback is not None:
                        self.db.executemany("INSERT INTO temp.import_feedback VALUES (?,?,?,?,?,?,?,?,?,?)",
                                            (_feedback_row(f, now) for f in then_feedback()))
            except sqlite3.OperationalError as e:
                if "full" not in str(e):
                    raise
                raise RlaifError(f"no room to stage the labels to import ({e}): SQLite stages them in the temp "
                                 "folder; free space there or point SQLITE_TMPDIR at a folder with room") from None
            try:
                self._swap_in_staged(supersede, copies)
            except sqlite3.OperationalError as e:
                if not is_busy(e):
                    raise
                raise RlaifError(f"{self.path}: another process kept the run store busy for {self.busy_timeout:g} s "
                                 "(a judge stage writing its pairs, another import); nothing was imported; run the "
                                 "import again", exit_code=1) from None
        finally:
            self.db.execute(f"PRAGMA cache_size={int(cache)}")
        return n

    # A group of an earlier import of the file from another path (``import_human_labels``'s ``copies``): ``old``
    # holds its records with the source the new import gives that line (``twin``); a group goes when every record
    # of it has its twin and the twin group is no larger. Grouped in one pass (human_feedback has no source
    # index), twins found through UNIQUE(key, source).
    _COPIES = """WITH old AS (SELECT source, {key} AS k, :new || substr(source, :after + :hash + 2) AS twin FROM {table}
                            WHERE source >= :lo AND source < :hi AND substr(source, 1, :after) = :start
                            AND substr(source, 1, length(:new)) != :new
                            AND substr(source, :after + :hash + 1, 1) = ':'),
                    grp AS (SELECT source, twin, COUNT(*) AS c FROM old GROUP BY source),
                    hit AS (SELECT o.source, COUNT(*) AS c FROM old o JOIN {table} n ON n.{key} = o.k AND n.source = o.twin
                            GROUP BY o.source),
                    new AS (SELECT source, COUNT(*) AS c FROM {table} WHERE source >= :new AND source < :new_hi
                            GROUP BY source)
                 DELETE FROM {table} WHERE source IN (SELECT g.source FROM grp g JOIN hit h ON h.source = g.source
                                                      JOIN new n ON n.source = g.twin WHERE h.c = g.c AND n.c = g.c)"""

    def _swap_in_staged(self, supersede: tuple[Iterable[str], str] | None,
                        copies: tuple[Iterable[str], int] = ((), 0)) -> None:
        with self.db:  # the swap: one short write transaction, no Python per row
            self.db.execute(f"INSERT INTO human_labels(pair_key, {self._LABEL_COLS}) SELECT * FROM "
                            "temp.import_labels WHERE true ORDER BY rowid " + self._ON_LABEL_CONFLICT.format(prompt=""))
            self.db.execute(f"INSERT INTO human_feedback(feedback_key, {self._FEEDBACK_COLS}) SELECT * FROM "
                            "temp.import_feedback WHERE true ORDER BY rowid " + self._ON_FEEDBACK_CONFLICT)
            olds, new = supersede if supersede is not None else ((), "")
            for old in olds:  # each ends with ':'; the sources starting with it sort in [old, old[:-1] + ';')
                for table, key in (("human_labels", "pair_key"), ("human_feedback", "feedback_key")):
                    self.db.execute(  # a range (the source index), not LIKE: file names compare case-sensitively
                        f"DELETE FROM {table} AS o WHERE o.source >= ? AND o.source < ? AND substr(o.source, 1, ?) = ? "
                        f"AND EXISTS (SELECT 1 FROM {table} n WHERE n.{key} = o.{key} AND n.source = ? || "
                        "substr(o.source, ?))", (old, old[:-1] + chr(ord(old[-1]) + 1), len(old), old, new, len(old) + 1))
            starts, hash_chars = copies
            for start in starts:
                for table, key in (("human_labels", "pair_key"), ("human_feedback", "feedback_key")):
                    self.db.execute(self._COPIES.format(table=table, key=key), {
                        "new": new, "new_hi": new[:-1] + chr(ord(new[-1]) + 1), "start": start, "after": len(start),
                        "lo": start, "hi": start[:-1] + chr(ord(start[-1]) + 1), "hash": hash_chars})

    def human_labels(self) -> list[HumanLabel]:
        """Every human label, oldest first."""
        return [h for _, h in self.iter_human_labels()]

    def iter_human_labels(self) -> Iterator[tuple[str, HumanLabel]]:
        """(pair_key, label) of every human label, oldest first, streamed."""
        for r in self.db.execute(f"SELECT pair_key, {self._LABEL_COLS} FROM human_labels ORDER BY id"):
            yield r[0], HumanLabel(*r[1:])

    def human_labels_by_key(self, keys: Iterable[str] | None = None) -> dict[str, list[HumanLabel]]:
        """Human labels by pair_key, oldest first (all of them, or those of ``keys``)."""
        q = f"SELECT pair_key, {self._LABEL_COLS} FROM human_labels"
        rows: list[tuple] = []
        if keys is None:
            rows = list(self.db.execute(q + " ORDER BY id"))
        else:
            ks = list(keys)
            for i in range(0, len(ks), IN_CHUNK):
                chunk = ks[i:i + IN_CHUNK]
                rows += self.db.execute(q + f" WHERE pair_key IN ({','.join('?' * len(chunk))}) ORDER BY id", chunk)
        out: dict[str, list[HumanLabel]] = {}
        for r in rows:
            out.setdefault(r[0], []).append(HumanLabel(*r[1:]))
        return out

    def human_label(self, key: str, source: str) -> HumanLabel | None:
        """The label of ``source`` on the comparison ``key``, if any."""
        r = self.db.execute(f"SELECT {self._LABEL_COLS} FROM human_labels WHERE pair_key=? AND source=?",
                            (key, source)).fetchone()
        return HumanLabel(*r) if r else None

    def set_human_label_note(self, key: str, source: str, note: str | None) -> None:
        with self.db:
            self.db.execute("UPDATE human_labels SET note=? WHERE pair_key=? AND source=?", (note, key, source))

    def delete_human_label(self, key: str, source: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM human_labels WHERE pair_key=? AND source=?", (key, source))

    def restore_human_label(self, key: str, h: HumanLabel) -> None:
        """Put back ``h`` (as read earlier) under ``key``, with its own ``created_at``."""
        with self.db:
            self.db.execute(self._UPSERT_LABEL.format(prompt="prompt=excluded.prompt, "),
                            (key, h.prompt, h.chosen, h.rejected, h.label, h.source, h.annotator, h.note,
                             h.created_at))

    def delete_human_labels_from(self, prefix: str) -> None:
        """Delete every human label and feedback whose source starts with ``prefix`` (e.g. rlaif.vocab.FILE)."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self.db:
            self.db.execute("DELETE FROM human_labels WHERE source LIKE ? ESCAPE '\\'", (pattern,))
            self.db.execute("DELETE FROM human_feedback WHERE source LIKE ? ESCAPE '\\'", (pattern,))

    # ---------------------------------------------------------- human feedback (thumbs, ratings, ranks)
    # One row per (feedback_key, source): a second verdict of the same source on a response replaces the first.
    _FEEDBACK_COLS = "prompt, completion, kind, value, scale, source, annotator, comment, created_at"

    _ON_FEEDBACK_CONFLICT = """ON CONFLICT(feedback_key, source) DO UPDATE SET kind=excluded.kind, value=excluded.value,
                    scale=excluded.scale, annotator=excluded.annotator, comment=excluded.comment,
                    created_at=excluded.created_at"""
    _UPSERT_FEEDBACK = f"""INSERT INTO human_feedback(feedback_key, {_FEEDBACK_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)
                    {_ON_FEEDBACK_CONFLICT}"""

    def add_feedback(self, items: Iterable[Feedback]) -> int:
        now = self._now()
        with self.db:
            cur = self.db.executemany(self._UPSERT_FEEDBACK, [_feedback_row(f, now) for f in items])
        return cur.rowcount

    def feedback_from(self, key: str, source: str) -> Feedback | None:
        """The feedback of ``source`` on the response ``key`` (``Feedback.key``), if any."""
        r = self.db.execute(f"SELECT {self._FEEDBACK_COLS} FROM human_feedback WHERE feedback_key=? AND source=?",
                            (key, source)).fetchone()
        return Feedback(*r) if r else None

    def set_feedback_comment(self, key: str, source: str, comment: str | None) -> None:
        with self.db:
            self.db.execute("UPDATE human_feedback SET comment=? WHERE feedback_key=? AND source=?",
                            (comment, key, source))

    def delete_feedback(self, key: str, source: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM human_feedback WHERE feedback_key=? AND source=?", (key, source))

    def feedback(self) -> list[Feedback]:
        """Every single-response human feedback, oldest first (none in a read-only store from before the table)."""
        try:
            rows = self.db.execute(f"SELECT {self._FEEDBACK_COLS} FROM human_feedback ORDER BY id").fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []
            raise
        return [Feedback(*r) for r in rows]

    def human_label_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM human_labels").fetchone()[0]

    def feedback_count(self, source: str, keys: list[str]) -> int:
        """On how many of the responses ``keys`` (feedback keys) ``source`` gave feedback."""
        return sum(self.db.execute(f"SELECT COUNT(*) FROM human_feedback WHERE source=? AND feedback_key IN "
                                   f"({','.join('?' * len(chunk))})", (source, *chunk)).fetchone()[0]
                   for chunk in (keys[i:i + IN_CHUNK] for i in range(0, len(keys), IN_CHUNK)))

    # ---------------------------------------------------------- viewer journals (rlaif/viewer/journal.py)
    @contextlib.contextmanager
    def journaled(self, journal: str, seq: int, at: float | None = None) -> Iterator[None]:
        """One write transaction holding what the block writes and the mark that entry ``seq`` of the viewer
        journal ``journal`` is stored: a kill after it leaves both, before it neither, so a replay writes each
        entry once. ``at``: the labels and feedback the block stores are dated then (the entry's key press), not
        now. Busy: raises as any write does, before the block runs."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.nested += 1
        self._dated = at
        try:
            yield
            self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                            (_JOURNAL_MARK + journal, str(seq)))
        except BaseException:
            self.db.nested -= 1
            self.db.rollback()
            raise
        finally:
            self._dated = None
        self.db.nested -= 1
        self.db.commit()

    def journal_stored(self, journal: str) -> int:
        """The last entry of the viewer journal ``journal`` that is stored (0: none)."""
        r = self.db.execute("SELECT value FROM meta WHERE key=?", (_JOURNAL_MARK + journal,)).fetchone()
        return int(r[0]) if r else 0

    def forget_journal(self, journal: str) -> None:
        """The journal ``journal`` is gone: its mark goes too."""
        with self.db:
            self.db.execute("DELETE FROM meta WHERE key=?", (_JOURNAL_MARK + journal,))

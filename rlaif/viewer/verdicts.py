"""Reviewer verdicts -> human labels in the run store, and undo.

Each verdict is one short transaction (``Store.add_human_labels``), written
the moment the key is pressed, so quitting or a crash loses nothing and a
judge run writing the same store (WAL, busy timeout) only waits briefly.
The source is ``viewer:<annotator>``; the table's UNIQUE(pair_key, source)
makes a second verdict by the same annotator replace the first. Undo
deletes what this session wrote, or puts back the row it replaced.

Verdict -> stored label (side A is the AI's chosen text):

    agree     chosen=A, rejected=B, label="chosen"
    flip      chosen=B, rejected=A, label="chosen"
    tie       chosen=A, rejected=B, label="tie"
    both_bad  chosen=A, rejected=B, label="both_bad"
"""

from __future__ import annotations

from dataclasses import dataclass

from rlaif.errors import RlaifError
from rlaif.records import HumanLabel
from rlaif.store import Store
from rlaif.viewer.queue import BOTH_BAD, PREFERENCE, TIE, Comparison, LabelRow

VERDICTS = ("agree", "flip", "tie", "both_bad")


def viewer_source(annotator: str) -> str:
    return f"viewer:{annotator}"


@dataclass(frozen=True)
class UndoEntry:
    """What one write changed: the key and source written, and the row it replaced (None: new row)."""

    key: str
    source: str
    previous: LabelRow | None
    what: str  # a verdict name, or "note"


def label_for(c: Comparison, verdict: str, annotator: str, note: str | None) -> HumanLabel:
    if verdict not in VERDICTS:
        raise RlaifError(f"unknown verdict {verdict!r}; one of {', '.join(VERDICTS)}")
    a, b = (c.rejected, c.chosen) if verdict == "flip" else (c.chosen, c.rejected)
    label = {"agree": PREFERENCE, "flip": PREFERENCE, "tie": TIE, "both_bad": BOTH_BAD}[verdict]
    return HumanLabel(c.prompt, a, b, label, viewer_source(annotator), annotator, note)


def _row(store: Store, key: str, source: str) -> LabelRow | None:
    r = store.db.execute(
        "SELECT prompt, chosen, rejected, label, source, annotator, note, created_at FROM human_labels "
        "WHERE pair_key=? AND source=?", (key, source)).fetchone()
    return LabelRow(*r) if r else None


def record_verdict(store: Store, c: Comparison, verdict: str, annotator: str,
                   note: str | None = None) -> UndoEntry:
    """Store the verdict now; a verdict without a note keeps the note given earlier."""
    source = viewer_source(annotator)
    prev = _row(store, c.key, source)
    if note is None and prev is not None:
        note = prev.note
    store.add_human_labels([label_for(c, verdict, annotator, note)])
    return UndoEntry(c.key, source, prev, verdict)


def set_note(store: Store, c: Comparison, annotator: str, note: str | None) -> UndoEntry | None:
    """Change the note of this annotator's label on ``c``; None when there is no label yet."""
    source = viewer_source(annotator)
    prev = _row(store, c.key, source)
    if prev is None:
        return None
    with store.db:
        store.db.execute("UPDATE human_labels SET note=? WHERE pair_key=? AND source=?",
                         (note or None, c.key, source))
    return UndoEntry(c.key, source, prev, "note")


def undo(store: Store, entry: UndoEntry) -> None:
    """Delete what ``entry`` wrote, or restore the row it replaced."""
    with store.db:
        if entry.previous is None:
            store.db.execute("DELETE FROM human_labels WHERE pair_key=? AND source=?", (entry.key, entry.source))
        else:
            p = entry.previous
            store.db.execute(
                """INSERT INTO human_labels(pair_key, prompt, chosen, rejected, label, source, annotator, note,
                   created_at) VALUES (?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(pair_key, source) DO UPDATE SET prompt=excluded.prompt, chosen=excluded.chosen,
                   rejected=excluded.rejected, label=excluded.label, annotator=excluded.annotator,
                   note=excluded.note, created_at=excluded.created_at""",
                (entry.key, p.prompt, p.chosen, p.rejected, p.label, entry.source, p.annotator, p.note, p.created_at))

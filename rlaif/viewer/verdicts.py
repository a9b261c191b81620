"""Reviewer verdicts -> human labels in the run store, and undo.

Each verdict is one short transaction (``Store.add_human_labels``), written
the moment the key is pressed, so quitting or a crash loses nothing and a
judge run writing the same store (WAL, busy timeout) only waits briefly.
The source is ``viewer:<annotator>``; the table's UNIQUE(pair_key, source)
makes a second verdict by the same annotator replace the first. Undo
deletes what this session wrote, or puts back the row it replaced.

Verdict -> stored label (side A is the AI's chosen text; label words in rlaif.vocab):

    agree     chosen=A, rejected=B, label=PREFERENCE ("chosen")
    flip      chosen=B, rejected=A, label=PREFERENCE
    tie       chosen=A, rejected=B, label=TIE
    both_bad  chosen=A, rejected=B, label=BOTH_BAD
"""

from __future__ import annotations

from dataclasses import dataclass

from rlaif.errors import RlaifError
from rlaif.records import HumanLabel
from rlaif.store import Store
from rlaif.viewer.queue import Comparison
from rlaif.vocab import BOTH_BAD, PREFERENCE, TIE, viewer_source

VERDICT_LABELS = {"agree": PREFERENCE, "flip": PREFERENCE, TIE: TIE, BOTH_BAD: BOTH_BAD}
VERDICTS = tuple(VERDICT_LABELS)


@dataclass(frozen=True)
class UndoEntry:
    """What one write changed: the key and source written, and the row it replaced (None: new row)."""

    key: str
    source: str
    previous: HumanLabel | None
    what: str  # a verdict name, or "note"


def label_for(c: Comparison, verdict: str, annotator: str, note: str | None) -> HumanLabel:
    if verdict not in VERDICTS:
        raise RlaifError(f"unknown verdict {verdict!r}; one of {', '.join(VERDICTS)}")
    a, b = (c.rejected, c.chosen) if verdict == "flip" else (c.chosen, c.rejected)
    return HumanLabel(c.prompt, a, b, VERDICT_LABELS[verdict], viewer_source(annotator), annotator, note)


def record_verdict(store: Store, c: Comparison, verdict: str, annotator: str,
                   note: str | None = None) -> UndoEntry:
    """Store the verdict now; a verdict without a note keeps the note given earlier."""
    source = viewer_source(annotator)
    prev = store.human_label(c.key, source)
    if note is None and prev is not None:
        note = prev.note
    store.add_human_labels([label_for(c, verdict, annotator, note)])
    return UndoEntry(c.key, source, prev, verdict)


def set_note(store: Store, c: Comparison, annotator: str, note: str | None) -> UndoEntry | None:
    """Change the note of this annotator's label on ``c``; None when there is no label yet."""
    source = viewer_source(annotator)
    prev = store.human_label(c.key, source)
    if prev is None:
        return None
    store.set_human_label_note(c.key, source, note or None)
    return UndoEntry(c.key, source, prev, "note")


def undo(store: Store, entry: UndoEntry) -> None:
    """Delete what ``entry`` wrote, or restore the row it replaced."""
    if entry.previous is None:
        store.delete_human_label(entry.key, entry.source)
    else:
        store.restore_human_label(entry.key, entry.previous)

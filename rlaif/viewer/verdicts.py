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

from dataclasses import dataclass, replace

from rlaif.errors import RlaifError
from rlaif.records import HumanLabel
from rlaif.store import Store
from rlaif.viewer.journal import Write
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


# The writes of the pairwise screen, as data (rlaif/viewer/journal.py: a kept one is journaled, and a
# replay after a kill runs it again): ``*_write`` makes one, the function it names runs it.
def verdict_write(c: Comparison, verdict: str, annotator: str, note: str | None = None) -> Write:
    """Store the verdict; a verdict without a note keeps the note given earlier (``put_label``)."""
    return Write("label", {"label": label_for(c, verdict, annotator, note), "keep_note": note is None,
                           "what": verdict})


def put_label(store: Store, label: HumanLabel, keep_note: bool, what: str) -> UndoEntry:
    prev = store.human_label(label.key, label.source)
    if keep_note and prev is not None:
        label = replace(label, note=prev.note)
    store.add_human_labels([label])
    return UndoEntry(label.key, label.source, prev, what)


def note_write(c: Comparison, annotator: str, note: str | None) -> Write:
    """Change the note of this annotator's label on ``c`` (``put_note``: None when there is no label yet)."""
    return Write("note", {"key": c.key, "source": viewer_source(annotator), "note": note or None})


def put_note(store: Store, key: str, source: str, note: str | None) -> UndoEntry | None:
    prev = store.human_label(key, source)
    if prev is None:
        return None
    store.set_human_label_note(key, source, note)
    return UndoEntry(key, source, prev, "note")


def undo_write(entry: UndoEntry) -> Write:
    """Delete what ``entry`` wrote, or restore the row it replaced (``undo_label``)."""
    return Write("undo-label", {"key": entry.key, "source": entry.source, "previous": entry.previous})


def undo_label(store: Store, key: str, source: str, previous: HumanLabel | None) -> None:
    if previous is None:
        store.delete_human_label(key, source)
    else:
        store.restore_human_label(key, previous)

"""What a viewer session keeps besides the store: notes typed before a verdict, and its undo stack.

Both screens (pairwise labels and single-response ratings) follow the same rules, kept here:
a note (a comment, in rating mode) typed on an item that has no verdict from this annotator yet is
held and saved with the next verdict on that item; a note on an item with a verdict is saved at
once and can be undone; undo walks back this session's writes, newest first.
"""

from __future__ import annotations

from typing import Generic, TypeVar

E = TypeVar("E")  # an undo entry (verdicts.UndoEntry, rating.RateUndo)


class Drafts(Generic[E]):
    def __init__(self) -> None:
        self.undo_stack: list[E] = []
        self._pending: dict[str, str] = {}

    def pending(self, key: str) -> str | None:
        return self._pending.get(key)

    def take(self, key: str) -> str | None:
        """The note held for ``key``, now to be saved with a verdict (and no longer held)."""
        return self._pending.pop(key, None)

    def editing(self, key: str, saved: str | None) -> str:
        """The text the note box opens with: the held note, else the saved one."""
        return self._pending.get(key) or saved or ""

    def wrote(self, entry: E) -> None:
        self.undo_stack.append(entry)

    def noted(self, key: str, text: str, entry: E | None) -> bool:
        """A note was submitted for ``key``: ``entry`` is the store write it made, or None when
        there is no verdict to attach it to yet, in which case it is held (an empty note drops
        what was held). True when it was saved."""
        if entry is not None:
            self.undo_stack.append(entry)
            return True
        if text:
            self._pending[key] = text
        else:
            self._pending.pop(key, None)
        return False

    def undo(self) -> E | None:
        return self.undo_stack.pop() if self.undo_stack else None

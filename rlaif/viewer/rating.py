"""Rating mode of the viewer (`rlaif view RUN --rate`): one response at a time, thumbs or a 1-5 rating.

The responses are the texts of the run's AI comparisons (each (prompt, response) once, in queue
order). A key stores human feedback (``rlaif.records.Feedback``, source ``viewer:ANNOTATOR``) in the
run store the moment it is pressed, one short transaction, like the pairwise verdicts; the next
`rlaif run` / `mix` uses it and `rlaif labels export` writes it. One verdict per response and
annotator: a later key (thumbs or rating) replaces the earlier one. Undo deletes what this session
wrote or puts back the row it replaced.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from rlaif.errors import RlaifError
from rlaif.records import Feedback, feedback_key
from rlaif.store import Store
from rlaif.viewer.journal import Write
from rlaif.viewer.queue import Comparison
from rlaif.vocab import RATING, THUMBS, viewer_source

RATING_SCALE = 5  # the viewer's rating keys: 1..5


@dataclass(frozen=True)
class Response:
    """One response to rate: its prompt, text, and where it comes from."""

    prompt_id: str
    prompt: str
    category: str | None
    text: str

    @property
    def key(self) -> str:
        return feedback_key(self.prompt, self.text)


@dataclass(frozen=True)
class RateUndo:
    key: str
    source: str
    previous: Feedback | None
    what: str  # "up", "down", "rating N" or "comment"


def iter_responses(comps: Iterable[Comparison]) -> Iterator[Response]:
    """Each non-empty (prompt, response) of the comparisons once, in their order; a comparison's two texts in
    the order of their keys, never the AI's chosen first (the order would tell the rater the AI's verdict)."""
    seen: set[str] = set()
    for c in comps:
        for r in sorted((Response(c.prompt_id, c.prompt, c.category, t) for t in (c.chosen, c.rejected)),
                        key=lambda r: r.key):
            if r.text.strip() and r.key not in seen:
                seen.add(r.key)
                yield r


def responses_of(comps: Iterable[Comparison]) -> list[Response]:
    return list(iter_responses(comps))


class Responses:
    """Responses read as far as the rater goes (``iter_responses`` over the review queue, which pages: a run
    of a million comparisons is not walked when the rating mode opens)."""

    def __init__(self, responses: Iterable[Response]):
        self._it, self._items, self.exhausted = iter(responses), [], False

    def has(self, i: int) -> bool:
        while len(self._items) <= i and not self.exhausted:
            r = next(self._it, None)
            if r is None:
                self.exhausted = True
            else:
                self._items.append(r)
        return 0 <= i < len(self._items)

    def __getitem__(self, i: int) -> Response:
        if not self.has(i):
            raise IndexError(i)
        return self._items[i]

    def read_keys(self) -> list[str]:
        """The keys of the responses read so far."""
        return [r.key for r in self._items]

    def index(self, key: str) -> int | None:
        """Where the response with ``key`` stands among those read so far."""
        return next((i for i, r in enumerate(self._items) if r.key == key), None)

    def described(self) -> str:
        """How many responses there are: all of them once read, else those read so far and a +."""
        return f"{len(self._items)}" if self.exhausted else f"{len(self._items)}+"


def verdict_feedback(r: Response, verdict: str, annotator: str, comment: str | None) -> Feedback:
    """``verdict``: "up", "down" or "1".."5" -> the Feedback record to store."""
    source = viewer_source(annotator)
    if verdict in ("up", "down"):
        return Feedback(r.prompt, r.text, THUMBS, int(verdict == "up"), 2, source, annotator, comment)
    if verdict.isdigit() and 1 <= int(verdict) <= RATING_SCALE:
        return Feedback(r.prompt, r.text, RATING, int(verdict), RATING_SCALE, source, annotator, comment)
    raise RlaifError(f"unknown rating {verdict!r}; up, down or 1..{RATING_SCALE}")


# The writes of the rating screen, as data (rlaif/viewer/journal.py), as in rlaif/viewer/verdicts.py.
def feedback_write(r: Response, verdict: str, annotator: str, comment: str | None = None) -> Write:
    """Store the verdict; without a comment, the comment given earlier on this response stays (``put_feedback``)."""
    return Write("feedback", {"feedback": verdict_feedback(r, verdict, annotator, comment),
                              "keep_comment": comment is None,
                              "what": verdict if not verdict.isdigit() else f"rating {verdict}"})


def put_feedback(store: Store, feedback: Feedback, keep_comment: bool, what: str) -> RateUndo:
    prev = store.feedback_from(feedback.key, feedback.source)
    if keep_comment and prev is not None:
        feedback = replace(feedback, comment=prev.comment)
    store.add_feedback([feedback])
    return RateUndo(feedback.key, feedback.source, prev, what)


def comment_write(r: Response, annotator: str, comment: str | None) -> Write:
    """Change the comment of this annotator's verdict on ``r`` (``put_comment``: None when there is none yet)."""
    return Write("comment", {"key": r.key, "source": viewer_source(annotator), "comment": comment or None})


def put_comment(store: Store, key: str, source: str, comment: str | None) -> RateUndo | None:
    prev = store.feedback_from(key, source)
    if prev is None:
        return None
    store.set_feedback_comment(key, source, comment)
    return RateUndo(key, source, prev, "comment")


def undo_write(entry: RateUndo) -> Write:
    """Delete what ``entry`` wrote, or put back the row it replaced (``undo_feedback``)."""
    return Write("undo-feedback", {"key": entry.key, "source": entry.source, "previous": entry.previous})


def undo_feedback(store: Store, key: str, source: str, previous: Feedback | None) -> None:
    if previous is None:
        store.delete_feedback(key, source)
    else:
        store.add_feedback([previous])


def describe(f: Feedback | None) -> str:
    """A verdict in words, for the screen."""
    if f is None:
        return "not rated"
    word = ("thumbs up" if f.value else "thumbs down") if f.kind == THUMBS else f"{f.value}/{f.scale}"
    return word + (f" · {f.comment}" if f.comment else "")

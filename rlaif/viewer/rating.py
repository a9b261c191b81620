"""Rating mode of the viewer (`rlaif view RUN --rate`): one response at a time, thumbs or a 1-5 rating.

The responses are the texts of the run's AI comparisons (each (prompt, response) once, in queue
order). A key stores human feedback (``rlaif.records.Feedback``, source ``viewer:ANNOTATOR``) in the
run store the moment it is pressed, one short transaction, like the pairwise verdicts; the next
`rlaif run` / `mix` uses it and `rlaif labels export` writes it. One verdict per response and
annotator: a later key (thumbs or rating) replaces the earlier one. Undo deletes what this session
wrote or puts back the row it replaced.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlaif.errors import RlaifError
from rlaif.records import Feedback, feedback_key
from rlaif.store import Store
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


def responses_of(comps: list[Comparison]) -> list[Response]:
    """Each non-empty (prompt, response) of the comparisons once, in their order (AI's chosen first)."""
    out, seen = [], set()
    for c in comps:
        for text in (c.chosen, c.rejected):
            r = Response(c.prompt_id, c.prompt, c.category, text)
            if text.strip() and r.key not in seen:
                seen.add(r.key)
                out.append(r)
    return out


def verdict_feedback(r: Response, verdict: str, annotator: str, comment: str | None) -> Feedback:
    """``verdict``: "up", "down" or "1".."5" -> the Feedback record to store."""
    source = viewer_source(annotator)
    if verdict in ("up", "down"):
        return Feedback(r.prompt, r.text, THUMBS, int(verdict == "up"), 2, source, annotator, comment)
    if verdict.isdigit() and 1 <= int(verdict) <= RATING_SCALE:
        return Feedback(r.prompt, r.text, RATING, int(verdict), RATING_SCALE, source, annotator, comment)
    raise RlaifError(f"unknown rating {verdict!r}; up, down or 1..{RATING_SCALE}")


def record(store: Store, r: Response, verdict: str, annotator: str, comment: str | None = None) -> RateUndo:
    """Store the verdict now; without a comment, the comment given earlier on this response stays."""
    source = viewer_source(annotator)
    prev = store.feedback_from(r.key, source)
    if comment is None and prev is not None:
        comment = prev.comment
    store.add_feedback([verdict_feedback(r, verdict, annotator, comment)])
    return RateUndo(r.key, source, prev, verdict if not verdict.isdigit() else f"rating {verdict}")


def set_comment(store: Store, r: Response, annotator: str, comment: str | None) -> RateUndo | None:
    """Change the comment of this annotator's verdict on ``r``; None when there is no verdict yet."""
    source = viewer_source(annotator)
    prev = store.feedback_from(r.key, source)
    if prev is None:
        return None
    store.set_feedback_comment(r.key, source, comment or None)
    return RateUndo(r.key, source, prev, "comment")


def undo(store: Store, entry: RateUndo) -> None:
    if entry.previous is None:
        store.delete_feedback(entry.key, entry.source)
    else:
        store.add_feedback([entry.previous])


def describe(f: Feedback | None) -> str:
    """A verdict in words, for the screen."""
    if f is None:
        return "not rated"
    word = ("thumbs up" if f.value else "thumbs down") if f.kind == THUMBS else f"{f.value}/{f.scale}"
    return word + (f" · {f.comment}" if f.comment else "")

"""The review queue: a run's AI-labelled comparisons, their order and filters.

Owns opening a run directory for reading (one-line errors for a missing or
corrupt store, or a run with no judge stage yet), turning ``ai_pairs`` rows
into :class:`Comparison` objects with the human labels attached, the
"need of review" order and the seeded random order, and the filters shared
by ``rlaif view``, ``rlaif show`` and ``rlaif labels``.

A comparison counts as *reviewed* when any human label (any source: a
labels file, an import, the viewer) exists for its ``pair_key``: the mix
then uses the human label in place of the AI pair.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif.errors import RlaifError
from rlaif.judges.details import PairDetails, PrincipleDetail
from rlaif.layout import RunLayout
from rlaif.records import HumanLabel, pair_key
from rlaif.store import Store
from rlaif.store_queue import PairQuery
from rlaif.vocab import PREFERENCE

SQLITE_HEADER = b"SQLite format 3\x00"
LOW_CONFIDENCE = 0.6
ORDERS = ("review", "random")
STATUSES = ("unreviewed", "reviewed", "unscored")


# ---------------------------------------------------------------- records
@dataclass(frozen=True)
class PrincipleVerdict:
    """One principle's verdict on a comparison (any field may be missing)."""

    id: str
    p_chosen: float | None = None
    score_chosen: float | None = None
    score_rejected: float | None = None
    rationale: str | None = None
    position_consistent: bool | None = None
    status: str = "scored"

    @property
    def pick(self) -> str | None:
        """"A" (the AI's chosen side), "B", "tie", or None when it gave no probability."""
        if self.p_chosen is None:
            return None
        return "A" if self.p_chosen > 0.5 else "B" if self.p_chosen < 0.5 else "tie"


@dataclass
class Comparison:
    """One AI-labelled comparison. Side "A" is the AI's chosen text, "B" the rejected one."""

    prompt_id: str
    prompt: str
    category: str | None
    chosen: str
    rejected: str
    confidence: float
    status: str
    details: dict[str, Any]
    chosen_id: str
    rejected_id: str
    key: str = ""
    principles: list[PrincipleVerdict] = field(default_factory=list)
    human: list[HumanLabel] = field(default_factory=list)

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Comparison:
        details = d.get("details") if isinstance(d.get("details"), dict) else {}
        c = cls(d["prompt_id"], d["prompt"], d.get("category"), d["chosen"], d["rejected"],
                float(d.get("confidence") or 0.0), d.get("status") or "scored", details,
                d.get("chosen_id", ""), d.get("rejected_id", ""))
        c.key = pair_key(c.prompt, c.chosen, c.rejected)
        c.principles = [_principle(pid, v) for pid, v in sorted(PairDetails.from_dict(details).principles.items())]
        return c

    @property
    def scored(self) -> bool:
        return self.status == "scored"

    @property
    def inconsistent(self) -> bool:
        """The judge's verdict changed when the two answers swapped places (overall or for a principle)."""
        return PairDetails.from_dict(self.details).inconsistent

    @property
    def disagreeing(self) -> list[str]:
        """Principles that prefer B although the aggregate picks A."""
        return PairDetails.from_dict(self.details).disagreeing(self.scored)

    def tier(self, low_confidence: float = LOW_CONFIDENCE) -> int:
        """0 order-inconsistent, 1 low confidence, 2 principles disagree, 3 the rest, 4 unscored (the
        queue sorts by the same rule in SQL: rlaif/store_queue.py `_order_sql`)."""
        if not self.scored:
            return 4
        if self.inconsistent:
            return 0
        if self.confidence < low_confidence:
            return 1
        return 2 if self.disagreeing else 3

    @property
    def reviewed(self) -> bool:
        return bool(self.human)

    def label_from(self, source: str) -> HumanLabel | None:
        return next((h for h in self.human if h.source == source), None)

    def verdict_of(self, h: HumanLabel) -> str:
        """A human label seen from this comparison: "A", "B", "tie" or "both_bad"."""
        if h.label != PREFERENCE:
            return h.label
        return "A" if h.chosen.strip() == self.chosen.strip() else "B"

    def haystack(self) -> str:
        parts = [self.prompt_id, self.prompt, self.category or "", self.chosen, self.rejected]
        parts += [p.rationale or "" for p in self.principles] + [h.note or "" for h in self.human]
        return "\n".join(parts).lower()


def _principle(pid: str, v: PrincipleDetail) -> PrincipleVerdict:
    return PrincipleVerdict(pid, v.p_chosen, v.score_chosen, v.score_rejected, v.rationale, v.position_consistent,
                            v.status)


# ---------------------------------------------------------------- opening a run
def open_run_store(run_dir: str | Path, readonly: bool = False) -> Store:
    """Open RUN_DIR/store.sqlite (``readonly``: read it without writing anything), or raise
    RlaifError with one line saying what is wrong."""
    d = Path(run_dir)
    if not d.exists():
        raise RlaifError(f"{d}: no such run directory (run `rlaif run CONFIG` first)")
    if not d.is_dir():
        raise RlaifError(f"{d}: not a run directory (expected a folder holding store.sqlite)")
    path = RunLayout(d).store
    if not path.is_file():
        raise RlaifError(f"{d}: no store.sqlite here (run `rlaif run CONFIG` first)")
    with open(path, "rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if head != SQLITE_HEADER:
        raise RlaifError(f"{path}: not a SQLite run store ({'empty file' if not head else 'unknown format'})")
    return Store(path, create=False, readonly=readonly)


def resolve_judge_hash(store: Store) -> str:
    """The judge hash of the latest finished judge stage (RlaifError when there is none)."""
    try:
        jh = store.latest_judge_hash()
        if jh:
            return jh
        rec = store.stage("judge")
        if rec is None:
            raise RlaifError(f"{store.path.parent}: no judge stage yet (run `rlaif judge CONFIG` first)")
        # The judge stage is running again: show the comparisons it made last time, if unambiguous.
        hashes = store.ai_pair_judge_hashes()
    except sqlite3.Error as e:
        raise RlaifError(f"{store.path}: cannot read the run store ({e})") from None
    if len(hashes) == 1:
        return hashes[0]
    raise RlaifError(f"{store.path.parent}: the judge stage is {rec['status']} and has not finished; "
                     "wait for it (or re-run `rlaif judge CONFIG`)")


@contextlib.contextmanager
def reading(store: Store):
    """SQLite errors while reading the run store become one-line RlaifErrors."""
    try:
        yield store
    except sqlite3.Error as e:
        raise _unreadable(store, e) from None


def _unreadable(store: Store, e: Exception) -> RlaifError:
    return RlaifError(f"{store.path}: cannot read the run store ({e}); was it written by another rlaif "
                      "version? re-run `rlaif judge CONFIG`")


def load_comparisons(store: Store, judge_hash: str | None = None) -> list[Comparison]:
    """Every AI comparison of the judge run, human labels attached, in store order (all in memory: for
    small runs and tests; the viewer, `show` and `labels` page or stream instead)."""
    try:
        jh = judge_hash or resolve_judge_hash(store)
        comps = [Comparison.from_record(d) for d in store.iter_ai_pairs(jh)]
        refresh(store, comps)
    except sqlite3.Error as e:
        raise _unreadable(store, e) from None
    return comps


def refresh(store: Store, comps: list[Comparison]) -> None:
    """Re-read the human labels of ``comps`` (after a write, or another process's)."""
    labels = store.human_labels_by_key({c.key for c in comps})
    for c in comps:
        c.human = labels.get(c.key, [])


# ---------------------------------------------------------------- order and filters
@dataclass
class Filters:
    """What to show; every set field must match (AND)."""

    principle: str | None = None
    status: str | None = None  # unreviewed | reviewed | unscored
    search: str | None = None  # case-insensitive substring of prompt, answers, rationales, notes
    source: str | None = None  # a human label whose source starts with this (file:, import:, viewer:NAME)
    category: str | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise RlaifError(f"--status must be one of {', '.join(STATUSES)}, got {self.status!r}")

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in (("principle", self.principle), ("status", self.status),
                                          ("source", self.source), ("category", self.category),
                                          ("search", self.search)) if v]
        return ", ".join(parts) or "none"


class Queue:
    """The review queue of a run, paged from the store in SQL (a run of a million comparisons opens at
    once): ``len``, indexing and ``position`` of a comparison, as a list of :class:`Comparison` would.

    ``review`` order: inconsistent, low confidence, disagreeing principles, the rest, unscored (least
    confident first within each); ``random``: by a seeded hash, stable for a seed. Both end with the
    pair's ids, so the order is total. Filters select within that order (an item keeps its place).
    """

    PAGE = 200

    def __init__(self, store: Store, judge_hash: str, filters: Filters | None = None, how: str = "review",
                 seed: int = 0, low_confidence: float = LOW_CONFIDENCE):
        if how not in ORDERS:
            raise RlaifError(f"--order must be one of {', '.join(ORDERS)}, got {how!r}")
        f = filters or Filters()
        self.store, self.filters = store, f
        self.query = PairQuery(judge_hash, f.principle, f.status, (f.search or "").strip() or None, f.source,
                               f.category, how, seed, low_confidence)
        self._pages: dict[int, list[Comparison]] = {}
        try:
            self._tiers = store.queue_tiers(self.query) if how == "review" else None
            self._len = sum(self._tiers) if self._tiers is not None else store.queue_count(self.query)
        except sqlite3.Error as e:
            raise _unreadable(store, e) from None

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._len))]
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(i)
        page = self._page(i // self.PAGE)
        return page[i % self.PAGE]

    def __iter__(self):
        for i in range(self._len):
            yield self[i]

    def _page(self, n: int) -> list[Comparison]:
        if n not in self._pages:
            if len(self._pages) > 50:  # keep memory flat however far the reviewer goes
                self._pages.pop(next(iter(self._pages)))
            comps = [Comparison.from_record(d)
                     for d in self.store.queue_page(self.query, n * self.PAGE, self.PAGE, self._tiers)]
            refresh(self.store, comps)
            self._pages[n] = comps
        return self._pages[n]

    def loaded(self) -> list[Comparison]:
        """The comparisons read so far (to refresh after a write)."""
        return [c for page in self._pages.values() for c in page]

    def position(self, c: Comparison | None) -> int | None:
        """Where ``c`` stands in this queue (None: not in it)."""
        if c is None:
            return None
        return self.store.queue_position(self.query, c.prompt_id, c.chosen_id, c.rejected_id)

    def review_counts(self, source: str) -> tuple[int, int, int]:
        """(comparisons with a human label; ``source``'s preference verdicts the AI agrees with, all of them)."""
        return self.store.queue_review_counts(self.query, source)


def build_queue(store: Store, filters: Filters | None = None, how: str = "review", seed: int = 0,
                low_confidence: float = LOW_CONFIDENCE, judge_hash: str | None = None) -> Queue:
    """The queue of the run's latest judge stage (or of ``judge_hash``)."""
    return Queue(store, judge_hash or resolve_judge_hash(store), filters, how, seed, low_confidence)


def check_principle(store: Store, judge_hash: str, principle: str | None) -> None:
    if principle and not store.ai_pairs_judged_on(judge_hash, principle):
        known = store.ai_pair_principles(judge_hash)
        if principle not in known:
            raise RlaifError(f"--principle {principle!r}: no comparison was judged on it "
                             f"(principles: {', '.join(sorted(known)) or 'none'})")


# ---------------------------------------------------------------- agreement
def agreement_of(c: Comparison, source: str) -> tuple[int, int]:
    """(AI agrees, n) for ``source``'s preference label on ``c``: (0, 0) when it has none or ``c`` is unscored
    (a queue's own totals come from SQL, ``Queue.review_counts``; this keeps them current after a verdict)."""
    h = c.label_from(source)
    if not c.scored or h is None or h.label != PREFERENCE:
        return 0, 0
    return int(c.verdict_of(h) == "A"), 1


def annotator_name(given: str | None) -> str:
    """--annotator, else $USER, else the login name."""
    import getpass
    import os

    name = (given or os.environ.get("USER") or "").strip()
    if not name:
        try:
            name = getpass.getuser()
        except Exception:  # noqa: BLE001 - no login name on some containers
            name = "unknown"
    if not re.fullmatch(r"[^\s:]+", name):
        raise RlaifError(f"--annotator {name!r}: use a name without spaces or ':'")
    return name

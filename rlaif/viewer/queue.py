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

import random
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif.errors import RlaifError
from rlaif.judges.details import PairDetails, PrincipleDetail
from rlaif.layout import RunLayout
from rlaif.records import HumanLabel, pair_key
from rlaif.store import Store
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
        return self.details.get("position_consistent") is False or any(
            p.position_consistent is False for p in self.principles)

    @property
    def disagreeing(self) -> list[str]:
        """Principles that prefer B although the aggregate picks A."""
        if not self.scored:
            return []
        return [p.id for p in self.principles if p.p_chosen is not None and p.p_chosen < 0.5]

    def tier(self, low_confidence: float = LOW_CONFIDENCE) -> int:
        """0 order-inconsistent, 1 low confidence, 2 principles disagree, 3 the rest, 4 unscored."""
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


def load_comparisons(store: Store, judge_hash: str | None = None) -> list[Comparison]:
    """Every AI comparison of the judge run, human labels attached, in store order."""
    try:
        jh = judge_hash or resolve_judge_hash(store)
        comps = [Comparison.from_record(d) for d in store.ai_pairs(jh)]
        labels = store.human_labels_by_key()
    except sqlite3.Error as e:
        raise RlaifError(f"{store.path}: cannot read the run store ({e}); was it written by another rlaif "
                         "version? re-run `rlaif judge CONFIG`") from None
    for c in comps:
        c.human = labels.get(c.key, [])
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

    def matches(self, c: Comparison) -> bool:
        if self.principle and not any(p.id == self.principle for p in c.principles):
            return False
        if self.status == "unscored" and c.scored:
            return False
        if self.status == "reviewed" and not c.reviewed:
            return False
        if self.status == "unreviewed" and (c.reviewed or not c.scored):
            return False
        if self.source and not any(h.source.startswith(self.source) for h in c.human):
            return False
        if self.category and c.category != self.category:
            return False
        if self.search and self.search.strip().lower() not in c.haystack():
            return False
        return True

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in (("principle", self.principle), ("status", self.status),
                                          ("source", self.source), ("category", self.category),
                                          ("search", self.search)) if v]
        return ", ".join(parts) or "none"


def order(comps: list[Comparison], how: str = "review", seed: int = 0,
          low_confidence: float = LOW_CONFIDENCE) -> list[Comparison]:
    """``review``: inconsistent, low confidence, disagreeing principles, the rest, unscored
    (least confident first within each); ``random``: a seeded shuffle, stable for a seed."""
    base = sorted(comps, key=lambda c: (c.prompt_id, c.chosen_id, c.rejected_id, c.key))
    if how == "random":
        random.Random(seed).shuffle(base)
        return base
    if how != "review":
        raise RlaifError(f"--order must be one of {', '.join(ORDERS)}, got {how!r}")
    return sorted(base, key=lambda c: (c.tier(low_confidence), c.confidence, -len(c.disagreeing)))


def build_queue(comps: list[Comparison], filters: Filters | None = None, how: str = "review", seed: int = 0,
                low_confidence: float = LOW_CONFIDENCE) -> list[Comparison]:
    """Order first, then filter, so an item keeps its place whatever the filter."""
    f = filters or Filters()
    return [c for c in order(comps, how, seed, low_confidence) if f.matches(c)]


def check_principle(comps: list[Comparison], principle: str | None) -> None:
    if principle and not any(p.id == principle for c in comps for p in c.principles):
        known = sorted({p.id for c in comps for p in c.principles})
        raise RlaifError(f"--principle {principle!r}: no comparison was judged on it "
                         f"(principles: {', '.join(known) or 'none'})")


# ---------------------------------------------------------------- agreement
def agreement_with(comps: Iterable[Comparison], source: str | None = None) -> tuple[int, int]:
    """(AI agrees, n) over scored comparisons with a preference label (from ``source``, or any)."""
    k = n = 0
    for c in comps:
        if not c.scored:
            continue
        for h in c.human:
            if h.label == PREFERENCE and (source is None or h.source == source):
                n += 1
                k += c.verdict_of(h) == "A"
    return k, n


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

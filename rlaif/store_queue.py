"""The review queue's SQL: part of the run store (rlaif/store.py, whose ``Store`` has these methods;
no other module speaks SQL).

The queue (rlaif/viewer/queue.py) pages through a judge run's AI pairs in "need of review" or a seeded
random order, with its filters, without reading the run into memory: the AI pairs carry the columns
the order and the filters need (``pair_key``, ``inconsistent``, ``n_disagree``, ``principle_ids``,
written with each pair) and the text rules stay in Python, as SQL functions on the connection.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from rlaif.judges.details import PairDetails
from rlaif.vocab import PREFERENCE


def review_columns(d: PairDetails, status: str) -> tuple[int, int, str]:
    """(inconsistent, principles disagreeing, ",id,id,") of an AI pair: what the review queue sorts and
    filters on (the rules are PairDetails'; stored as columns so that SQL can page through them)."""
    ids = "".join(f",{pid}" for pid in sorted(d.principles)) + ("," if d.principles else "")
    return int(d.inconsistent), len(d.disagreeing(status == "scored")), ids


def _has(needle: str, *fields) -> bool:
    """``needle`` (lower case) in any field, case-insensitively; the last field is details JSON, of
    which the rationales are searched (not its ids and hashes)."""
    *plain, details = fields
    if any(needle in (f or "").lower() for f in plain):
        return True
    if not details or "rationale" not in details:
        return False
    from rlaif.judges.details import PairDetails

    ps = PairDetails.from_dict(json.loads(details)).principles.values()
    return any(needle in (p.rationale or "").lower() for p in ps)


def _rank(seed: int, *ids: str) -> int:
    from rlaif.hashing import content_hash

    return int(content_hash([seed, *ids], 12), 16)


def sql_functions(db: sqlite3.Connection) -> sqlite3.Connection:
    """The Python functions the queries call (content hashes and text rules stay in Python)."""
    from rlaif.records import pair_key

    db.create_function("rlaif_pair_key", 3, pair_key, deterministic=True)
    db.create_function("rlaif_has", -1, _has, deterministic=True)
    db.create_function("rlaif_rank", 4, _rank, deterministic=True)
    db.create_function("rlaif_same", 2, lambda a, b: (a or "").strip() == (b or "").strip(), deterministic=True)
    return db


@dataclass(frozen=True)
class PairQuery:
    """Which AI pairs of a judge run, in what order: the review queue as SQL (rlaif/viewer/queue.py gives
    the filters their meaning; ``order`` "review" sorts by need of review, "random" by a seeded hash)."""

    judge_hash: str
    principle: str | None = None
    status: str | None = None  # unreviewed | reviewed | unscored
    search: str | None = None
    source: str | None = None  # a human label whose source starts with this
    category: str | None = None
    order: str = "review"
    seed: int = 0
    low_confidence: float = 0.6


LABELLED_SQL = "EXISTS (SELECT 1 FROM human_labels h WHERE h.pair_key=a.pair_key{})"
PAIR_COLS = ("prompt_id", "prompt", "category", "chosen", "rejected", "confidence", "status", "details",
              "chosen_id", "rejected_id")
PAIR_SELECT = """SELECT a.prompt_id, p.text, p.category, c.text, r.text, a.confidence, a.status, a.details,
                         a.chosen_id, a.rejected_id{extra}
                  FROM ai_pairs a JOIN prompts p ON p.id=a.prompt_id
                  JOIN candidates c ON c.id=a.chosen_id JOIN candidates r ON r.id=a.rejected_id"""


def pair_record(r: tuple) -> dict[str, Any]:
    d = dict(zip(PAIR_COLS, r))
    d["details"] = json.loads(d["details"])
    return d


def _query_sql(q: PairQuery) -> tuple[str, list]:
    """FROM ... WHERE ... selecting the pairs of ``q`` (alias ``a``)."""
    joins, where, params = _query_parts(q)
    return f"FROM ai_pairs a{joins} WHERE {where}", params


def _query_parts(q: PairQuery) -> tuple[str, str, list]:
    """(joins after ``ai_pairs a``, the WHERE condition, its parameters) of ``q``."""
    joins, where, params = "", ["a.judge_hash=?"], [q.judge_hash]
    if q.category is not None or q.search:
        joins += " JOIN prompts p ON p.id=a.prompt_id"
    if q.principle:
        where.append("instr(a.principle_ids, ?) > 0")
        params.append(f",{q.principle},")
    if q.status == "unscored":
        where.append("a.status != 'scored'")
    elif q.status == "reviewed":
        where.append(LABELLED_SQL.format(""))
    elif q.status == "unreviewed":
        where.append("a.status = 'scored' AND NOT " + LABELLED_SQL.format(""))
    if q.source:
        where.append(LABELLED_SQL.format(" AND substr(h.source, 1, ?) = ?"))
        params += [len(q.source), q.source]
    if q.category is not None:
        where.append("p.category = ?")
        params.append(q.category)
    if q.search:
        joins += " JOIN candidates c ON c.id=a.chosen_id JOIN candidates r ON r.id=a.rejected_id"
        where.append("(rlaif_has(?, a.prompt_id, p.text, p.category, c.text, r.text, a.details) OR "
                     + LABELLED_SQL.format(" AND rlaif_has(?, h.note, NULL)") + ")")
        params += [q.search.strip().lower()] * 2
    return joins, " AND ".join(where), params


# The review order's tiers (``Comparison.tier``), each a range of the ai_pairs_queue index; within a
# tier the order is confidence, then more disagreeing principles first, then the ids.
_TIERS = ("a.status = 'scored' AND a.inconsistent = 1",
          "a.status = 'scored' AND a.inconsistent = 0 AND a.confidence < ?",
          "a.status = 'scored' AND a.inconsistent = 0 AND a.confidence >= ? AND a.n_disagree > 0",
          "a.status = 'scored' AND a.inconsistent = 0 AND a.confidence >= ? AND a.n_disagree = 0",
          "a.status != 'scored'")
_UNSCORED_RANGES = ("a.status < 'scored'", "a.status > 'scored'")  # the last tier as two index ranges
_IDS = "a.prompt_id, a.chosen_id, a.rejected_id"  # the last key of every order: it makes the order total
_IN_TIER = f"a.confidence, -a.n_disagree, {_IDS}"
_IN_TIER_BACK = ", ".join(f"{e} DESC" for e in _IN_TIER.split(", "))  # the same order, from the tier's end
_TIER_CASE = ("CASE WHEN a.status != 'scored' THEN 4 WHEN a.inconsistent THEN 0 WHEN a.confidence < ? THEN 1 "
              "WHEN a.n_disagree > 0 THEN 2 ELSE 3 END")  # the tier of a pair, the same rule as _TIERS


def _order_sql(q: PairQuery) -> tuple[str, list]:
    """The queue's order: comma-separated expressions over ``a``, a total order. The CASE is
    ``Comparison.tier`` (rlaif/viewer/queue.py) in SQL, which the viewer shows as "why": the review
    order test checks that the two agree."""
    if q.order == "random":
        return f"rlaif_rank(?, {_IDS}), {_IDS}", [q.seed]
    return f"{_TIER_CASE}, {_IN_TIER}", [q.low_confidence]


class QueueQueries:
    """The ``Store`` methods of the review queue (``self.db`` is the store's connection)."""

    db: sqlite3.Connection

    def ai_pair_principles(self, judge_hash: str) -> set[str]:
        """Every principle id that judged some AI pair of the run."""
        rows = self.db.execute("SELECT DISTINCT principle_ids FROM ai_pairs WHERE judge_hash=?", (judge_hash,))
        return {pid for (ids,) in rows for pid in ids.split(",") if pid}

    def ai_pairs_judged_on(self, judge_hash: str, principle: str) -> bool:
        """Whether some AI pair of the run was judged on ``principle`` (stops at the first)."""
        return self.db.execute("SELECT 1 FROM ai_pairs WHERE judge_hash=? AND instr(principle_ids, ?) > 0 LIMIT 1",
                               (judge_hash, f",{principle},")).fetchone() is not None

    def labelled_ai_pairs(self, judge_hash: str) -> Iterator[dict[str, Any]]:
        """The AI pairs of a judge run that carry a human label (each once), streamed."""
        q = (PAIR_SELECT.format(extra="") + " WHERE a.judge_hash=? AND " + LABELLED_SQL.format("")
             + " ORDER BY a.prompt_id, a.chosen_id, a.rejected_id")
        for r in self.db.execute(q, (judge_hash,)):
            yield pair_record(r)

    def queue_count(self, q: PairQuery) -> int:
        sql, params = _query_sql(q)
        return self.db.execute(f"SELECT COUNT(*) {sql}", params).fetchone()[0]

    def queue_tiers(self, q: PairQuery) -> list[int]:
        """How many pairs of the queue fall in each review tier (one scan of the ai_pairs_queue index,
        which covers the columns the order and the reviewed filters read)."""
        if q.status in ("reviewed", "unreviewed") and not q.search:
            return self._tiers_from_labels(q)
        sql, params = _query_sql(q)
        # A count per tier over its index range (at 1M pairs 0.25 s; one GROUP BY over a CASE: 0.6 s). The
        # last tier, status != 'scored', is counted as the two ranges on either side of 'scored'.
        counts = [self.db.execute(f"SELECT COUNT(*) {sql} AND {t}", [*params, *([q.low_confidence] * t.count("?"))]
                                  ).fetchone()[0] for t in _TIERS[:-1]]
        return counts + [sum(self.db.execute(f"SELECT COUNT(*) {sql} AND {t}", params).fetchone()[0]
                             for t in _UNSCORED_RANGES)]

    def _tiers_from_labels(self, q: PairQuery) -> list[int]:
        """``queue_tiers`` of a reviewed / unreviewed queue, counted from the human labels (few) rather than by a
        probe of the labels per pair (a million probes: 5.6 s at 1M): reviewed = the labelled pairs per tier;
        unreviewed = the scored pairs per tier less the labelled ones (tiers 0-3 hold scored pairs only)."""
        base = replace(q, status=None)
        joins, where, params = _query_parts(base)
        counts = dict(self.db.execute(
            f"SELECT {_TIER_CASE} AS t, COUNT(DISTINCT a.rowid) FROM human_labels hx CROSS JOIN "
            f"ai_pairs a INDEXED BY ai_pairs_key ON a.pair_key=hx.pair_key{joins} WHERE {where} GROUP BY t",
            [q.low_confidence, *params]))
        labelled = [counts.get(t, 0) for t in range(len(_TIERS))]
        if q.status == "reviewed":
            return labelled
        return [n - k for n, k in zip(self.queue_tiers(base)[:-1], labelled[:-1])] + [0]

    def queue_page(self, q: PairQuery, offset: int, limit: int, tiers: list[int] | None = None) -> list[dict[str, Any]]:
        """Records (as ``ai_pairs``) at positions offset.. of the queue: the page's rows are found by
        the order alone, then their texts read (the sort never carries texts). The review order is read
        tier by tier (``tiers``: ``queue_tiers``), each an index range, so a page of a million
        comparisons does not sort them all; a page in the back half of a tier is read from the tier's
        end, in the reversed order, and turned round: SQLite steps over an OFFSET row by row (with a
        label probe each under --status): End at 1M unreviewed stepped over 185k rows, now none. (Counts
        are the queue's at opening, as before: a label written since shifts the pages read later by one.)"""
        sql, params = _query_sql(q)
        if q.order == "review":
            ids: list[int] = []
            for t, n in zip(_TIERS, tiers if tiers is not None else self.queue_tiers(q)):
                if offset >= n:
                    offset -= n
                    continue
                take, tparams = min(limit - len(ids), n - offset), [*params, *([q.low_confidence] * t.count("?"))]
                after = n - offset - take  # rows of the tier after this slice
                if after < offset:
                    ids += [r[0] for r in self.db.execute(
                        f"SELECT a.rowid {sql} AND {t} ORDER BY {_IN_TIER_BACK} LIMIT ? OFFSET ?",
                        [*tparams, take, after])][::-1]
                else:
                    ids += [r[0] for r in self.db.execute(
                        f"SELECT a.rowid {sql} AND {t} ORDER BY {_IN_TIER} LIMIT ? OFFSET ?", [*tparams, take, offset])]
                offset = 0
                if len(ids) >= limit:
                    break
        else:
            order, oparams = _order_sql(q)
            ids = [r[0] for r in self.db.execute(f"SELECT a.rowid {sql} ORDER BY {order} LIMIT ? OFFSET ?",
                                                 [*params, *oparams, limit, offset])]
        if not ids:
            return []
        q_rows = PAIR_SELECT.format(extra=", a.rowid") + f" WHERE a.rowid IN ({','.join('?' * len(ids))})"
        by_id = {r[-1]: pair_record(r[:-1]) for r in self.db.execute(q_rows, ids)}
        return [by_id[i] for i in ids]

    def queue_position(self, q: PairQuery, prompt_id: str, chosen_id: str, rejected_id: str) -> int | None:
        """Where the pair stands in the queue (None: the filters leave it out)."""
        sql, params = _query_sql(q)
        order, oparams = _order_sql(q)
        me = "a.prompt_id=? AND a.chosen_id=? AND a.rejected_id=?"
        ids = [prompt_id, chosen_id, rejected_id]
        if self.db.execute(f"SELECT 1 {sql} AND {me}", [*params, *ids]).fetchone() is None:
            return None
        mine = f"(SELECT {order} FROM ai_pairs a WHERE a.judge_hash=? AND {me})"
        return self.db.execute(f"SELECT COUNT(*) {sql} AND ({order}) < {mine}",
                               [*params, *oparams, *oparams, q.judge_hash, *ids]).fetchone()[0]

    def queue_review_counts(self, q: PairQuery, source: str) -> tuple[int, int, int]:
        """(pairs of the queue with any human label; ``source``'s preference labels on its scored pairs
        that agree with the AI's choice, and all of them)."""
        joins, where, params = _query_parts(q)
        # From the human labels to the pairs (CROSS JOIN fixes that order in SQLite, INDEXED BY the index:
        # the planner would otherwise scan the run's pairs once per label): labels are few next to a
        # million AI pairs, and each finds its pair through the pair_key index.
        pairs = "ai_pairs a INDEXED BY ai_pairs_key"
        reviewed = self.db.execute(f"SELECT COUNT(DISTINCT a.rowid) FROM human_labels hx CROSS JOIN {pairs} "
                                   f"ON a.pair_key=hx.pair_key{joins} WHERE {where}", params).fetchone()[0]
        k, n = self.db.execute(
            f"SELECT COALESCE(SUM(rlaif_same(h2.chosen, c2.text)), 0), COUNT(*) FROM human_labels h2 CROSS JOIN "
            f"{pairs} ON a.pair_key=h2.pair_key{joins} JOIN candidates c2 ON c2.id=a.chosen_id "
            f"WHERE h2.source=? AND h2.label=? AND a.status='scored' AND {where}",
            [source, PREFERENCE, *params]).fetchone()
        return reviewed, k, n


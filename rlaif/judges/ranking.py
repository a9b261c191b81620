"""Per-principle scores -> weighted total -> ranking -> preference pairs."""

from __future__ import annotations

import math
from itertools import combinations

from rlaif.constitution import Constitution


def aggregate(values: dict[str, float | None], constitution: Constitution, category: str | None = None) -> float | None:
    """Weighted mean over the principles that apply to ``category`` and have a value (a score,
    or P(first better)), in constitution order. The one aggregation, pointwise and pairwise."""
    num = den = 0.0
    for p in constitution.principles:
        if not p.applies(category):
            continue
        s = values.get(p.id)
        if s is None:
            continue
        num += p.weight * s
        den += p.weight
    return num / den if den else None


def sigmoid(x: float) -> float:
    """Logistic function that never overflows (math.exp of a large positive raises)."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def confidence(gap: float, temperature: float) -> float:
    return sigmoid(abs(gap) / temperature)


def ranked_pairs(ranked: list[str], mode: str) -> list[tuple[str, str]]:
    """Which (higher, lower) pairs of a ranking (best first) become preference pairs.

    best_worst: the top against the bottom; all: every pair; adjacent: neighbours.
    """
    if len(ranked) < 2:
        return []
    if mode == "best_worst":
        return [(ranked[0], ranked[-1])]
    if mode == "adjacent":
        return list(zip(ranked, ranked[1:]))
    if mode == "all":
        return list(combinations(ranked, 2))
    raise ValueError(f"unknown pairs mode {mode!r}")


def rank_pairs(totals: list[tuple[str, float]], mode: str) -> list[tuple[str, str, float]]:
    """(id, total) -> [(chosen_id, rejected_id, gap)] by ``mode`` (``ranked_pairs``).
    Equal totals make no pair."""
    total = dict(totals)
    ranked = [i for i, _ in sorted(totals, key=lambda t: (-t[1], t[0]))]
    return [(a, b, total[a] - total[b]) for a, b in ranked_pairs(ranked, mode) if total[a] > total[b]]

"""Per-principle scores -> weighted total -> ranking -> preference pairs."""

from __future__ import annotations

import math
from itertools import combinations

from rlaif.constitution import Constitution


def aggregate(scores: dict[str, float | None], constitution: Constitution, category: str | None) -> float | None:
    """Weighted mean over the applicable principles that were scored."""
    num = den = 0.0
    for p in constitution.principles:
        if not p.applies(category):
            continue
        s = scores.get(p.id)
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


def rank_pairs(totals: list[tuple[str, float]], mode: str) -> list[tuple[str, str, float]]:
    """(id, total) -> [(chosen_id, rejected_id, gap)] by ``mode``.

    best_worst: the top against the bottom; all: every pair; adjacent:
    neighbours in the ranking. Equal totals make no pair.
    """
    ranked = sorted(totals, key=lambda t: (-t[1], t[0]))
    if len(ranked) < 2:
        return []
    if mode == "best_worst":
        pairs = [(ranked[0], ranked[-1])]
    elif mode == "adjacent":
        pairs = list(zip(ranked, ranked[1:]))
    elif mode == "all":
        pairs = list(combinations(ranked, 2))
    else:
        raise ValueError(f"unknown pairs mode {mode!r}")
    return [(a[0], b[0], a[1] - b[1]) for a, b in pairs if a[1] > b[1]]

"""Turning a judge's answer into a verdict, accepting only offered tokens.

With logprobs, the probabilities of the offered tokens (after stripping
whitespace: " A" counts as "A") are summed and renormalised. Without
logprobs, the answer text itself is used as a hard label when it is exactly
one of the offered tokens. Anything else is ``None`` (the caller records the
item as unscored with the raw output).
"""

from __future__ import annotations

import math

CHOICES = ("A", "B")
DIGITS = tuple(str(d) for d in range(1, 10))


def offered_probs(top_logprobs: dict[str, float] | None, options: tuple[str, ...]) -> dict[str, float] | None:
    if not top_logprobs:
        return None
    mass = {o: 0.0 for o in options}
    for tok, lp in top_logprobs.items():
        t = tok.strip()
        if t in mass and lp is not None and math.isfinite(lp):
            mass[t] += math.exp(lp)
    total = sum(mass.values())
    if total <= 0:
        return None
    return {o: m / total for o, m in mass.items()}


def hard_label(text: str | None, options: tuple[str, ...]) -> str | None:
    t = (text or "").strip().rstrip(".").strip()
    return t if t in options else None


def parse_choice(text: str | None, top_logprobs: dict[str, float] | None) -> tuple[float | None, str]:
    """P(first response better) and how it was read: "logprobs", "text" or "unparsed"."""
    probs = offered_probs(top_logprobs, CHOICES)
    if probs is not None:
        return probs["A"], "logprobs"
    label = hard_label(text, CHOICES)
    if label is not None:
        return (1.0 if label == "A" else 0.0), "text"
    return None, "unparsed"


def parse_digit(text: str | None, top_logprobs: dict[str, float] | None) -> tuple[float | None, str]:
    """Expected score in [1, 9] and how it was read."""
    probs = offered_probs(top_logprobs, DIGITS)
    if probs is not None:
        return sum(int(d) * p for d, p in probs.items()), "logprobs"
    label = hard_label(text, DIGITS)
    if label is not None:
        return float(label), "text"
    return None, "unparsed"

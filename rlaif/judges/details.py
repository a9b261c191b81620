"""The typed record of an AI comparison's details (``ai_pairs.details``), no heavy imports.

The judging core writes it (``to_dict``, stored as JSON by the store); the viewer,
``labels`` and the report read it back (``from_dict``, lenient: a field that is
missing or of the wrong type reads as None, so run directories written by earlier
versions still open). The stored JSON shape::

    {"method": "pointwise" | "pairwise", "gap": float | None,
     "position_consistent": bool | None,
     "principles": {id: {"p_chosen": P(chosen better) | None,
                         "score_chosen": float | None, "score_rejected": float | None,
                         "rationale": str | None, "position_consistent": bool | None,
                         "status": "scored" | "unscored", "raw": str | None}},
     "constitution_hash": str, "principle_hashes": {id: hash},
     "judge": {"backend", "model", "template_hash"}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _flag(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _compact(d: dict[str, Any], compact: bool) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None} if compact else d


@dataclass(frozen=True)
class PrincipleDetail:
    """One principle's verdict on a comparison, seen from the chosen side.

    p_chosen: P(chosen better) (pairwise: the judge's probability; pointwise: the
    sigmoid of the score gap over the confidence scale). score_chosen/score_rejected:
    pointwise scores. rationale: the chain-of-thought text (pairwise with cot).
    position_consistent: whether both orders agreed (pairwise, both orders).
    raw: the judge's raw output when it could not be read.
    """

    p_chosen: float | None = None
    score_chosen: float | None = None
    score_rejected: float | None = None
    rationale: str | None = None
    position_consistent: bool | None = None
    status: str = "scored"  # "scored" | "unscored"
    raw: str | None = None

    def to_dict(self, compact: bool = False) -> dict[str, Any]:
        """``compact``: without the fields that are None (``from_dict`` reads a missing field as None)."""
        return _compact({"p_chosen": self.p_chosen, "score_chosen": self.score_chosen,
                         "score_rejected": self.score_rejected, "rationale": self.rationale,
                         "position_consistent": self.position_consistent, "status": self.status, "raw": self.raw},
                        compact)

    @classmethod
    def from_dict(cls, d: Any) -> PrincipleDetail:
        d = d if isinstance(d, dict) else {}
        return cls(_num(d.get("p_chosen")), _num(d.get("score_chosen")), _num(d.get("score_rejected")),
                   _text(d.get("rationale")) or None, _flag(d.get("position_consistent")),
                   _text(d.get("status")) or "scored", _text(d.get("raw")))


@dataclass(frozen=True)
class JudgeIdentity:
    backend: str | None = None
    model: str | None = None
    template_hash: str | None = None

    def to_dict(self, compact: bool = False) -> dict[str, Any]:
        return _compact({"backend": self.backend, "model": self.model, "template_hash": self.template_hash}, compact)

    @classmethod
    def of(cls, judge) -> JudgeIdentity:
        return cls(judge.backend, judge.model, judge.template_hash)

    @classmethod
    def from_dict(cls, d: Any) -> JudgeIdentity:
        d = d if isinstance(d, dict) else {}
        return cls(_text(d.get("backend")), _text(d.get("model")), _text(d.get("template_hash")))


@dataclass(frozen=True)
class PairDetails:
    """``ai_pairs.details``: how one comparison was judged (the module docstring has the JSON)."""

    method: str | None = None  # "pointwise" | "pairwise"
    gap: float | None = None  # pointwise: total(chosen) - total(rejected)
    position_consistent: bool | None = None  # pairwise: every principle's orders agreed
    principles: dict[str, PrincipleDetail] = field(default_factory=dict)
    constitution_hash: str | None = None
    principle_hashes: dict[str, str] = field(default_factory=dict)
    judge: JudgeIdentity = JudgeIdentity()

    def to_dict(self, compact: bool = False) -> dict[str, Any]:
        """``compact``: no None field at any level (what the store keeps: a million comparisons do not store a
        million sets of nulls)."""
        return _compact({"method": self.method, "gap": self.gap, "position_consistent": self.position_consistent,
                         "principles": {pid: p.to_dict(compact) for pid, p in self.principles.items()},
                         "constitution_hash": self.constitution_hash, "principle_hashes": dict(self.principle_hashes),
                         "judge": self.judge.to_dict(compact)}, compact)

    @property
    def inconsistent(self) -> bool:
        """The verdict changed when the two answers swapped places (overall or for a principle)."""
        return self.position_consistent is False or any(
            p.position_consistent is False for p in self.principles.values())

    def disagreeing(self, scored: bool = True) -> list[str]:
        """Principles that prefer the rejected answer although the aggregate picks the chosen one
        (none for an unscored comparison)."""
        if not scored:
            return []
        return sorted(pid for pid, p in self.principles.items() if p.p_chosen is not None and p.p_chosen < 0.5)

    @classmethod
    def from_dict(cls, d: Any) -> PairDetails:
        d = d if isinstance(d, dict) else {}
        principles = d.get("principles") if isinstance(d.get("principles"), dict) else {}
        hashes = d.get("principle_hashes") if isinstance(d.get("principle_hashes"), dict) else {}
        return cls(_text(d.get("method")), _num(d.get("gap")), _flag(d.get("position_consistent")),
                   {str(pid): PrincipleDetail.from_dict(v) for pid, v in principles.items()},
                   _text(d.get("constitution_hash")), {str(k): str(v) for k, v in hashes.items()},
                   JudgeIdentity.from_dict(d.get("judge")))

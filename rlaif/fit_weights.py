"""Fitted principle weights (``judge.weights: fitted``), as OpenAI's Rule-Based Rewards fit theirs.

The judge's per-principle evidence on a comparison of A and B is the feature vector: a pointwise
backend's score difference s_p(A) - s_p(B) (the embedded judge, an LLM rubric), a pairwise
backend's P_p(A better) - 0.5; with ``judge.fit.length_features`` also log(1 + words(A)) -
log(1 + words(B)). An L2-regularised logistic regression (scikit-learn's, C = 1 / ``fit.l2``)
of "people preferred A" on these features, over the human *training* pairs of the mix (the
held-out split is never shown to it: ``rlaif/mixing.human_split``), gives one weight per
principle (a weight may come out negative: a principle that disagrees with people) and an
intercept. The intercept is the preference for the response shown first; every other
per-prompt term (RBR's bias per prompt category) adds the same amount to both responses of a
prompt and cancels in a comparison, so none is fitted. A principle that does not apply to a
comparison, or has no verdict on it, contributes 0.

With fitted weights a response's total is sum_p w_p s_p (+ w_len log(1 + words)), and a pair's
confidence is the model's own probability sigmoid(gap); pairwise, P(A) = sigmoid(sum_p w_p
(P_p(A) - 0.5) + w_len (length difference)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rlaif.errors import RlaifError

LENGTH = "length"  # the length feature's name among the weights


def words_feature(text: str) -> float:
    return math.log1p(len(text.split()))


@dataclass
class Evidence:
    """One comparison (A, B) as the judge saw it: per-principle evidence for A (None: no verdict), the
    vote the constitution's weights give ("A", "B", "tie" or None) and the length difference."""

    x: dict[str, float | None]
    constitution_vote: str | None
    length: float


@dataclass
class FittedWeights:
    weights: dict[str, float]
    intercept: float
    length: float | None = None  # the weight of the length feature, when fitted with it
    n_train: int = 0
    l2: float = 1.0
    held_out: dict = field(default_factory=dict)  # filled by the judge stage

    def logit(self, x: dict[str, float | None], length: float = 0.0) -> float:
        """The log-odds that A beats B, without the first-position intercept."""
        s = sum(w * (x.get(pid) or 0.0) for pid, w in self.weights.items())
        return s + (self.length or 0.0) * length

    def vote(self, e: Evidence) -> str:
        z = self.logit(e.x, e.length)
        return "tie" if z == 0 else ("A" if z > 0 else "B")

    def total(self, scores: dict[str, float | None], response: str) -> float | None:
        """A pointwise total: sum_p w_p s_p (+ w_len log(1 + words)); None when no principle scored it."""
        got = [(w, scores.get(pid)) for pid, w in self.weights.items() if scores.get(pid) is not None]
        if not got:
            return None
        return sum(w * s for w, s in got) + (self.length or 0.0) * words_feature(response)

    def item_total(self, item) -> float | None:
        """``total`` of a judging-core ``Item`` (its scored principles: those that apply)."""
        return self.total({pid: item.score(pid) for pid in item.verdicts}, item.response)

    def comparison_p_first(self, comp) -> float | None:
        """P(a better) of a judging-core ``Comparison``; None when no principle gave a verdict."""
        from rlaif.judges.ranking import sigmoid

        x = {pid: v.p_first - 0.5 for pid, v in comp.verdicts.items() if v.p_first is not None}
        if not x:
            return None
        return sigmoid(self.logit(x, words_feature(comp.a) - words_feature(comp.b)))

    def to_dict(self) -> dict:
        return {"weights": self.weights, "intercept": self.intercept, "length": self.length,
                "n_train": self.n_train, "l2": self.l2, "held_out": self.held_out}

    @classmethod
    def from_dict(cls, d: dict) -> FittedWeights:
        """The weights a judge stage recorded (``to_dict``, in its info as ``fitted_weights``)."""
        return cls(dict(d["weights"]), float(d["intercept"]), d.get("length"), d.get("n_train", 0),
                   d.get("l2", 1.0), d.get("held_out") or {})


def fit(evidence: list[Evidence], prefers_a: list[bool], principle_ids: list[str], l2: float = 1.0,
        length_features: bool = False) -> FittedWeights:
    """An L2-regularised logistic fit of ``prefers_a`` on the evidence (see the module docstring)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    if len(set(prefers_a)) < 2:
        raise RlaifError("judge.weights: fitted needs human training pairs preferring both the first and the "
                         "second response; show the chosen response first for some pairs only")
    cols = list(principle_ids) + ([LENGTH] if length_features else [])
    X = np.array([[(e.x.get(c) or 0.0) if c != LENGTH else e.length for c in cols] for e in evidence], dtype=float)
    y = np.array(prefers_a, dtype=int)
    model = LogisticRegression(C=1.0 / l2, fit_intercept=True, max_iter=1000)
    model.fit(X, y)
    coef = [float(v) for v in model.coef_[0]]
    weights = dict(zip(principle_ids, coef))
    return FittedWeights(weights, float(model.intercept_[0]), coef[-1] if length_features else None,
                         len(evidence), l2)


def orient(labels) -> tuple[list[dict], list[bool]]:
    """Human preference labels as A/B rows, the chosen response first for every other label (so that
    the first-position intercept is identifiable), and whether A is the preferred one."""
    rows, prefers_a = [], []
    for i, h in enumerate(labels):
        first = i % 2 == 0
        a, b = (h.chosen, h.rejected) if first else (h.rejected, h.chosen)
        rows.append({"prompt": h.prompt, "response_a": a, "response_b": b, "uid": h.key})
        prefers_a.append(first)
    return rows, prefers_a


def gather_evidence(judge, constitution, rows: list[dict], jcfg, category: str | None = None,
                    seed: int = 0) -> list[Evidence]:
    """The judge's per-principle evidence on each row (prompt, response_a, response_b), through the
    judging core and the judge's call cache."""
    from rlaif.judges.core import Comparison, Item, compare_items, comparison_principles, prefer, score_items, vote

    lengths = [words_feature(r["response_a"]) - words_feature(r["response_b"]) for r in rows]
    ids = [p.id for p in constitution.principles]
    if jcfg.resolved_method == "pairwise":
        comps = [Comparison(r["prompt"], category, r["response_a"], r["response_b"],
                            comparison_principles(constitution, category, jcfg.principles, seed, r.get("uid", str(i))))
                 for i, r in enumerate(rows)]
        compare_items(judge, comps, jcfg.batch_size, progress="judge (weights)")
        out = []
        for c, n in zip(comps, lengths):
            x = {pid: (c.verdicts[pid].p_first - 0.5) if pid in c.verdicts and c.verdicts[pid].p_first is not None
                 else None for pid in ids}
            out.append(Evidence(x, vote(c.p_first(constitution)), n))
        return out
    items = [Item(r["prompt"], category, r[k]) for r in rows for k in ("response_a", "response_b")]
    score_items(judge, constitution, items, jcfg.batch_size, progress="judge (weights)")
    out = []
    for i, n in zip(range(0, len(items), 2), lengths):
        a, b = items[i], items[i + 1]
        x = {pid: (a.score(pid) - b.score(pid)) if a.score(pid) is not None and b.score(pid) is not None else None
             for pid in ids}
        out.append(Evidence(x, prefer(a.total(constitution), b.total(constitution)), n))
    return out


def principle_votes(evidence: list[Evidence], pid: str) -> list[str | None]:
    """One principle's own vote on each comparison: the sign of its evidence (None: no verdict)."""
    return [None if e.x.get(pid) is None else ("tie" if e.x[pid] == 0 else ("A" if e.x[pid] > 0 else "B"))
            for e in evidence]


def fitted_votes(fitted: FittedWeights, judge, constitution, rows: list[dict], jcfg,
                 seed: int) -> tuple[list[str], dict[str, list[str | None]]]:
    """The fitted weighting's vote on each row and each principle's own votes (what the agreement gate
    measures with ``judge.weights: fitted``: the weighting that made the AI labels)."""
    evidence = gather_evidence(judge, constitution, rows, jcfg, None, seed)
    return [fitted.vote(e) for e in evidence], {p.id: principle_votes(evidence, p.id) for p in constitution.principles}


def held_out_comparison(fitted: FittedWeights, evidence: list[Evidence], prefers_a: list[bool],
                        constitution) -> dict:
    """Held-out human agreement with the constitution's weights and with the fitted ones (accuracy over
    every pair, a missing vote counted wrong; 95% Wilson intervals), and per principle its own agreement
    next to both weights."""
    from rlaif.evaluate import agreement, wilson

    human = ["A" if p else "B" for p in prefers_a]

    def fig(votes):
        a = agreement(human, votes)
        a["ci95"] = wilson(round((a["accuracy"] or 0) * a["n"]), a["n"])
        return a

    per = {}
    for p in constitution.principles:
        per[p.id] = {"agreement": agreement(human, principle_votes(evidence, p.id))["accuracy"],
                     "constitution_weight": p.weight, "fitted_weight": fitted.weights.get(p.id)}
    return {"n": len(evidence), "constitution": fig([e.constitution_vote for e in evidence]),
            "fitted": fig([fitted.vote(e) for e in evidence]), "per_principle": per}


def fit_for_run(run, judge) -> FittedWeights:
    """Fit the weights on the run's human training pairs (the mix's split; never its held-out pairs)
    and measure both weightings on the held-out pairs (``FittedWeights.held_out``)."""
    jc, constitution = run.cfg.judge, run.inputs.constitution
    train, held = run.human_split()
    if len(train) < jc.fit.min_labels:
        raise RlaifError(f"judge.weights: fitted needs at least judge.fit.min_labels={jc.fit.min_labels} human "
                         f"training pairs (mix.human_labels, after the held-out split); found {len(train)}")
    rows, prefers_a = orient(train)
    evidence = gather_evidence(judge, constitution, rows, jc, None, run.cfg.seed)
    fitted = fit(evidence, prefers_a, [p.id for p in constitution.principles], jc.fit.l2, jc.fit.length_features)
    if held:
        rows, prefers_a = orient(held)
        fitted.held_out = held_out_comparison(fitted, gather_evidence(judge, constitution, rows, jc, None,
                                                                      run.cfg.seed), prefers_a, constitution)
        # Only the training pairs are in the judge stage's input hash (the held-out ones do not change its
        # labels), so the report compares this to tell figures measured on an older held-out split.
        fitted.held_out["split_hash"] = split_hash(held)
    return fitted


def split_hash(pairs) -> str:
    """Content hash of a split of human pairs (each comparison and its winner)."""
    from rlaif.hashing import content_hash

    return content_hash(sorted((h.key, h.chosen) for h in pairs))


def train_split_hash(run) -> str:
    """What the fit reads: the human training pairs (part of the judge stage's input hash when fitted)."""
    return split_hash(run.human_split()[0])


def held_out_is_stale(run, fitted: dict) -> bool:
    """Whether the held-out figures recorded with ``fitted`` (``FittedWeights.to_dict``) were measured on other
    held-out human pairs than the run's current ones (labels added or changed since the judge stage ran)."""
    recorded = (fitted.get("held_out") or {}).get("split_hash")
    held = run.human_split()[1]
    return (split_hash(held) != recorded) if recorded else bool(held)

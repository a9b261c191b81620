"""`rlaif eval-judge`: a judge's agreement with human pairwise labels."""

from __future__ import annotations

from pathlib import Path

from rlaif.errors import RlaifError
from rlaif.evaluate import agreement
from rlaif.records import iter_jsonl


def load_ab_pairs(path: str | Path, limit: int | None = None) -> list[dict]:
    out = []
    for n, obj in iter_jsonl(path, "pairs"):
        for key in ("prompt", "response_a", "response_b", "label"):
            if not isinstance(obj.get(key), str):
                raise RlaifError(f"{path}:{n}: pairs record needs a string field {key!r} "
                                 "(format: prompt, response_a, response_b, label A|B|tie)")
        if obj["label"] not in ("A", "B", "tie"):
            raise RlaifError(f"{path}:{n}: 'label' must be \"A\", \"B\" or \"tie\", got {obj['label']!r}")
        out.append(obj)
        if limit and len(out) >= limit:
            break
    if not out:
        raise RlaifError(f"{path}: no pairs found")
    return out


def eval_judge(pairs_path: str, jcfg, limit: int | None = None, device: str = "cpu",
               category: str | None = None, seed: int = 0) -> dict:
    """Agreement of the judge described by ``jcfg`` (a JudgeConfig) with the file's human labels."""
    from rlaif.constitution import load_constitution
    from rlaif.judges import make_judge
    from rlaif.train.hf import quiet_hf

    constitution = load_constitution(jcfg.constitution)
    rows = load_ab_pairs(pairs_path, limit)
    quiet_hf()
    judge = make_judge(jcfg, device, seed)
    try:
        pred, per_principle, extra = judge_rows(judge, constitution, rows, jcfg, category, seed)
    finally:
        judge.close()
    human = [r["label"] for r in rows]
    result = agreement(human, pred)
    result.update({"pairs": len(rows), "human_ties": human.count("tie"), "backend": judge.backend,
                   "model": judge.model, "method": jcfg.resolved_method, "constitution": constitution.name,
                   "constitution_hash": constitution.hash, "category": category, **extra,
                   "per_principle": {pid: agreement(human, p) for pid, p in per_principle.items()
                                     if any(x is not None for x in p)}})
    return result


def judge_rows(judge, constitution, rows: list[dict], jcfg, category: str | None, seed: int):
    """The judge's A/B/tie/None vote on each row (prompt, response_a, response_b), per principle
    votes, and counters. Through the judging core; the judge's own call cache (``make_judge``'s
    store) makes a repeated question free."""
    if jcfg.resolved_method == "pairwise":
        return _pairwise(judge, constitution, rows, jcfg, category, seed)
    return _pointwise(judge, constitution, rows, jcfg, category)


def _pointwise(judge, constitution, rows, jcfg, category):
    from rlaif.judges.core import Item, prefer, score_items

    # The pairs carry no prompt category: every principle applies unless the
    # caller names the category of the whole file (e.g. harmful for red-team sets).
    items = [Item(r["prompt"], category, r[k]) for r in rows for k in ("response_a", "response_b")]
    stats = score_items(judge, constitution, items, jcfg.batch_size, progress="judge vs human")
    pairs = [(items[i], items[i + 1]) for i in range(0, len(items), 2)]
    pred = [prefer(a.total(constitution), b.total(constitution)) for a, b in pairs]
    per = {p.id: [prefer(a.score(p.id), b.score(p.id)) for a, b in pairs] for p in constitution.principles}
    report = stats.as_dict() | judge.report()
    return pred, per, {"unscored": sum(x is None for x in pred), "calls": report.get("calls"),
                       "position_consistency": report.get("position_consistency")}


def _pairwise(judge, constitution, rows, jcfg, category, seed):
    from rlaif.judges.core import Comparison, compare_items, comparison_principles, vote

    comps = [Comparison(r["prompt"], category, r["response_a"], r["response_b"],
                        comparison_principles(constitution, category, jcfg.principles, seed, r.get("uid", str(i))))
             for i, r in enumerate(rows)]
    stats = compare_items(judge, comps, jcfg.batch_size, progress="eval-judge (pairwise)")
    pred = [vote(c.p_first(constitution)) for c in comps]
    per = {p.id: [vote(c.verdicts[p.id].p_first) if p.id in c.verdicts else None for c in comps]
           for p in constitution.principles}
    return pred, per, {"unscored": sum(x is None for x in pred), **(stats.as_dict() | judge.report())}

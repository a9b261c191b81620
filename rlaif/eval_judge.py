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
    from rlaif.judges.base import close_judge
    from rlaif.train.hf import quiet_hf

    constitution = load_constitution(jcfg.constitution)
    rows = load_ab_pairs(pairs_path, limit)
    quiet_hf()
    judge = make_judge(jcfg, device, seed)
    try:
        pred, per_principle, extra = judge_rows(judge, constitution, rows, jcfg, category, seed)
    finally:
        close_judge(judge)
    human = [r["label"] for r in rows]
    result = agreement(human, pred)
    result.update({"pairs": len(rows), "human_ties": human.count("tie"), "backend": judge.backend,
                   "model": judge.model, "method": jcfg.resolved_method, "constitution": constitution.name,
                   "constitution_hash": constitution.hash, "category": category, **extra,
                   "per_principle": {pid: agreement(human, p) for pid, p in per_principle.items()
                                     if any(x is not None for x in p)}})
    return result


def judge_rows(judge, constitution, rows: list[dict], jcfg, category: str | None, seed: int, store=None):
    """The judge's A/B/tie/None vote on each row, per principle votes, and counters."""
    if jcfg.resolved_method == "pairwise":
        return _pairwise(judge, constitution, rows, jcfg, category, seed)
    return _pointwise(judge, constitution, rows, jcfg, category, store)


def _vote(pa: float | None) -> str | None:
    return None if pa is None else ("tie" if pa == 0.5 else ("A" if pa > 0.5 else "B"))


def _pointwise(judge, constitution, rows, jcfg, category, store=None):
    from rlaif.judges.run import Item, score_items

    # The pairs carry no prompt category: every principle applies unless the
    # caller names the category of the whole file (e.g. harmful for red-team sets).
    items = [Item(r["prompt"], category, r[k]) for r in rows for k in ("response_a", "response_b")]
    own_cache = getattr(judge, "caches_calls", False)
    stats = score_items(judge, constitution, items, None if own_cache else store, jcfg.batch_size,
                        progress="judge vs human")
    pred: list[str | None] = []
    per: dict[str, list] = {p.id: [] for p in constitution.principles}
    for i in range(0, len(items), 2):
        a, b = items[i], items[i + 1]
        ta, tb = a.total(constitution), b.total(constitution)
        pred.append(None if ta is None or tb is None else ("tie" if ta == tb else ("A" if ta > tb else "B")))
        for p in constitution.principles:
            va = a.verdicts.get(p.id)
            vb = b.verdicts.get(p.id)
            ok = va is not None and vb is not None and va.score is not None and vb.score is not None
            per[p.id].append(None if not ok else ("tie" if va.score == vb.score else ("A" if va.score > vb.score else "B")))
    report = judge.report() if hasattr(judge, "report") else stats.as_dict()
    return pred, per, {"unscored": sum(x is None for x in pred), "calls": report.get("calls"),
                       "position_consistency": report.get("position_consistency")}


def _pairwise(judge, constitution, rows, jcfg, category, seed):
    from rlaif.judges.pairwise import aggregate_pair, comparison_principles
    from rlaif.progress import task

    jobs = [(i, pr) for i, r in enumerate(rows)
            for pr in comparison_principles(constitution, category, jcfg.principles, seed, r.get("uid", str(i)))]
    verdicts: list[dict] = [{} for _ in rows]
    chunks = [jobs[s:s + jcfg.batch_size] for s in range(0, len(jobs), jcfg.batch_size)]
    batches = ([(rows[i]["prompt"], rows[i]["response_a"], rows[i]["response_b"], pr) for i, pr in chunk]
               for chunk in chunks)
    with task("eval-judge (pairwise)", len(jobs)) as advance:
        for chunk, vs in zip(chunks, judge.compare_batches(batches)):
            for (i, pr), v in zip(chunk, vs):
                verdicts[i][pr.id] = v
            advance(len(chunk))
    pred = [_vote(aggregate_pair(vs, constitution)) for vs in verdicts]
    per = {p.id: [_vote(vs[p.id].p_first) if p.id in vs else None for vs in verdicts] for p in constitution.principles}
    report = judge.report()
    return pred, per, {"unscored": sum(x is None for x in pred), **report}

"""Pairwise judging of a run's candidates with an LLM judge.

For each prompt every pair of distinct candidates is compared under the
applicable principles (all of them, or one sampled per comparison with
probability proportional to weight, as in Constitutional AI). Per-principle
P(first better) is aggregated by weight into the comparison's label. The
candidates are ranked by their mean probability of winning, and the
``pairs`` mode picks which comparisons become AI pairs, oriented by the
label, with confidence max(P, 1 - P). Comparisons with no usable verdict are
stored as ``unscored`` (kept for the report and the viewer, never trained
on).
"""

from __future__ import annotations

from itertools import combinations

from rlaif.constitution import Constitution, Principle
from rlaif.hashing import content_hash
from rlaif.judges.llm import LLMJudge, PairVerdict


def sample_principle(principles: list[Principle], seed: int, key: str) -> Principle:
    total = sum(p.weight for p in principles)
    u = int(content_hash([seed, "principle", key], 8), 16) / 0xFFFFFFFF * total
    for p in principles:
        u -= p.weight
        if u <= 0:
            return p
    return principles[-1]


def comparison_principles(constitution: Constitution, category: str | None, mode: str, seed: int,
                          key: str) -> list[Principle]:
    ps = [p for p in constitution.principles if p.applies(category)]
    if mode == "sample" and ps:
        return [sample_principle(ps, seed, key)]
    return ps


def aggregate_pair(verdicts: dict[str, PairVerdict], constitution: Constitution) -> float | None:
    num = den = 0.0
    for pid, v in verdicts.items():
        if v.p_first is None:
            continue
        w = constitution.principle(pid).weight
        num += w * v.p_first
        den += w
    return num / den if den else None


def judge_pairwise(store, judge: LLMJudge, constitution: Constitution, gen_hash: str, judge_hash: str,
                   mode: str, principle_mode: str, seed: int, batch_size: int) -> dict:
    from rlaif.progress import task

    prompts = {p.id: p for p in store.prompts("train")}
    by_prompt: dict[str, list] = {}
    for c in store.candidates(gen_hash):
        if c.prompt_id in prompts:
            group = by_prompt.setdefault(c.prompt_id, [])
            if c.text.strip() and all(c.text.strip() != o.text.strip() for o in group):
                group.append(c)
    comps = []  # (prompt, cand_a, cand_b, principles)
    for pid, cands in by_prompt.items():
        p = prompts[pid]
        for a, b in combinations(cands, 2):
            ps = comparison_principles(constitution, p.category, principle_mode, seed, f"{a.id}|{b.id}")
            if ps:
                comps.append((p, a, b, ps))
    jobs = [(ci, pr) for ci, (_, _, _, ps) in enumerate(comps) for pr in ps]
    verdicts: list[dict[str, PairVerdict]] = [{} for _ in comps]
    chunks = [jobs[s:s + batch_size] for s in range(0, len(jobs), batch_size)]
    batches = ([(comps[ci][0].text, comps[ci][1].text, comps[ci][2].text, pr) for ci, pr in chunk] for chunk in chunks)
    with task("judge (pairwise)", len(jobs)) as advance:
        for chunk, vs in zip(chunks, judge.compare_batches(batches)):  # committed per batch
            for (ci, pr), v in zip(chunk, vs):
                verdicts[ci][pr.id] = v
            advance(len(chunk), info=f"{judge.stats.calls} calls, {judge.stats.cache_hits} cached")

    # Rank per prompt by mean P(win); emit pairs per mode.
    index = {(a.id, b.id): i for i, (_, a, b, _) in enumerate(comps)}
    label: dict[tuple[str, str], float] = {}
    rows, unscored_rows = [], []
    for (p, a, b, _ps), vs in zip(comps, verdicts):
        pa = aggregate_pair(vs, constitution)
        if pa is None:
            unscored_rows.append((p.id, a.id, b.id, 0.5, "unscored", _details(judge, constitution, vs)))
            continue
        label[(a.id, b.id)] = pa
        label[(b.id, a.id)] = 1.0 - pa
    for pid, cands in by_prompt.items():
        wins = {}
        for c in cands:
            ps = [label[(c.id, o.id)] for o in cands if (c.id, o.id) in label]
            if ps:
                wins[c.id] = sum(ps) / len(ps)
        ranked = sorted(wins, key=lambda cid: (-wins[cid], cid))
        if mode == "all":
            chosen_pairs = [(x, y) for x, y in combinations(ranked, 2)]
        elif mode == "adjacent":
            chosen_pairs = list(zip(ranked, ranked[1:]))
        else:
            chosen_pairs = [(ranked[0], ranked[-1])] if len(ranked) >= 2 else []
        for x, y in chosen_pairs:
            if (x, y) not in label:
                continue
            px = label[(x, y)]
            if px == 0.5:
                continue
            chosen, rejected = (x, y) if px > 0.5 else (y, x)
            flip = (chosen, rejected) not in index  # the comparison was asked as (rejected, chosen)
            ci = index[(rejected, chosen) if flip else (chosen, rejected)]
            rows.append((pid, chosen, rejected, max(px, 1 - px), "scored",
                         _details(judge, constitution, verdicts[ci], flip)))
    store.put_ai_pairs(judge_hash, rows + unscored_rows)
    return {"comparisons": len(comps), "ai_pairs": len(rows), "unscored_comparisons": len(unscored_rows),
            "candidates": sum(len(c) for c in by_prompt.values()), **judge.report()}


def _details(judge: LLMJudge, constitution: Constitution, vs: dict[str, PairVerdict], flip: bool = False) -> dict:
    """``ai_pairs.details`` (schema in Store.put_ai_pairs); ``flip``: the comparison was asked (b, a)."""
    principles = {}
    for pid, v in vs.items():
        p = v.p_first if v.p_first is None or not flip else 1.0 - v.p_first
        principles[pid] = {"p_chosen": p, "score_chosen": None, "score_rejected": None, "rationale": v.rationale,
                           "position_consistent": v.position_consistent, "status": v.status, "raw": v.raw}
    flags = [v.position_consistent for v in vs.values() if v.position_consistent is not None]
    return {"method": "pairwise", "gap": None, "position_consistent": all(flags) if flags else None,
            "principles": principles, "constitution_hash": constitution.hash,
            "principle_hashes": {p.id: p.hash for p in constitution.principles},
            "judge": {"backend": judge.backend, "model": judge.model, "template_hash": judge.template_hash}}

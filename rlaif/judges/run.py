"""The judge stage: a run's candidates -> per-principle verdicts -> ranking -> AI pairs.

Both methods go through the judging core (rlaif/judges/core.py) and store one
``PairDetails`` record per AI pair (rlaif/judges/details.py).

- pointwise (``judge_candidates``): every candidate scored per principle; the
  weighted totals rank the candidates of a prompt; ``pairs`` picks the pairs,
  with confidence sigmoid(gap / temperature). Identical texts compete once;
  candidates with no score are left out.
- pairwise (``judge_pairwise``): every pair of distinct candidates of a prompt is
  compared under the applicable principles (all, or one sampled per comparison);
  the candidates are ranked by their mean probability of winning, ``pairs``
  picks the comparisons that become AI pairs, oriented by the label, with
  confidence max(P, 1 - P). Comparisons with no usable verdict are stored as
  ``unscored`` (kept for the report and the viewer, never trained on).
"""

from __future__ import annotations

from itertools import combinations

from rlaif.constitution import Constitution
from rlaif.judges.base import JudgeBackend
from rlaif.judges.core import Comparison, Item, JudgeStats, compare_items, comparison_principles, score_items
from rlaif.judges.details import JudgeIdentity, PairDetails, PrincipleDetail
from rlaif.judges.ranking import confidence, rank_pairs, ranked_pairs, sigmoid


def _details(judge: JudgeBackend, constitution: Constitution, method: str, principles: dict[str, PrincipleDetail],
             gap: float | None = None, position_consistent: bool | None = None) -> PairDetails:
    return _details_of(judge, constitution)(method, principles, gap, position_consistent)


# Candidates judged per part by the pointwise stage: what it holds in memory at once (their items,
# verdicts and pairs), whatever the size of the run.
PART_CANDIDATES = 50_000


def candidate_items(store, gen_hash: str) -> tuple[list, list[Item]]:
    """The train prompts' candidates and one ``Item`` each: what the pointwise judge scores."""
    cands, items = [], []
    for c, it in candidate_parts(store, gen_hash, None):
        cands += c
        items += it
    return cands, items


def candidate_parts(store, gen_hash: str, size: int | None):
    """``candidate_items`` in parts of about ``size`` candidates (None: one part), a prompt's candidates
    never split between parts (its ranking needs them all)."""
    prompts = {p.id: p for p in store.prompts("train")}
    cands: list = []
    for c in store.iter_candidates(gen_hash):
        if c.prompt_id not in prompts:
            continue
        if size is not None and len(cands) >= size and c.prompt_id != cands[-1].prompt_id:
            yield cands, [Item(prompts[x.prompt_id].text, prompts[x.prompt_id].category, x.text) for x in cands]
            cands = []
        cands.append(c)
    if cands or size is None:
        yield cands, [Item(prompts[x.prompt_id].text, prompts[x.prompt_id].category, x.text) for x in cands]


def pair_comparisons(store, constitution: Constitution, gen_hash: str, principle_mode: str, seed: int):
    """What the pairwise judge compares: (candidates by prompt id, {(a id, b id): Comparison}, {(a id, b id):
    prompt id}); each pair of distinct candidates of a train prompt, in the order asked."""
    prompts = {p.id: p for p in store.prompts("train")}
    by_prompt: dict[str, list] = {}
    for c in store.candidates(gen_hash):
        if c.prompt_id in prompts:
            group = by_prompt.setdefault(c.prompt_id, [])
            if c.text.strip() and all(c.text.strip() != o.text.strip() for o in group):
                group.append(c)
    comps: dict[tuple[str, str], Comparison] = {}
    prompt_of: dict[tuple[str, str], str] = {}
    for pid, cands in by_prompt.items():
        p = prompts[pid]
        for a, b in combinations(cands, 2):
            ps = comparison_principles(constitution, p.category, principle_mode, seed, f"{a.id}|{b.id}")
            if ps:
                comps[(a.id, b.id)] = Comparison(p.text, p.category, a.text, b.text, ps)
                prompt_of[(a.id, b.id)] = pid
    return by_prompt, comps, prompt_of


def judge_candidates(store, judge: JudgeBackend, constitution: Constitution, gen_hash: str, judge_hash: str,
                     mode: str, temperature: float, batch_size: int, total=None,
                     pair_temperature: float | None = None) -> dict:
    """Pointwise: score every candidate, store judgements, rank per prompt, store AI pairs. ``total``
    (Item -> float | None): the ranking total (default the constitution's weighted mean; fitted
    weights: rlaif/fit_weights.py); ``pair_temperature``: the confidence scale of a pair's total gap
    (default ``temperature``, which also scales each principle's P(chosen) in the details)."""
    total = total or (lambda it: it.total(constitution))
    stats, n_cands, n_pairs = JudgeStats(), 0, 0
    principle_hash = {p.id: p.hash for p in constitution.principles}
    details = _details_of(judge, constitution)
    first = True
    # parts: memory stays flat as the run grows (the size looked up here, not bound as a default when the module
    # loaded: tests set a smaller one)
    for cands, items in candidate_parts(store, gen_hash, PART_CANDIDATES):
        part = score_items(judge, constitution, items, batch_size)
        stats.calls, stats.cache_hits, stats.unscored = (stats.calls + part.calls, stats.cache_hits + part.cache_hits,
                                                         stats.unscored + part.unscored)
        store.put_judgements(judge_hash, [(c.id, pid, principle_hash[pid], v.score, v.status, v.raw)
                                          for c, it in zip(cands, items) for pid, v in it.verdicts.items()])
        pairs = _rank_part(constitution, cands, items, mode, temperature, pair_temperature, total, details)
        store.put_ai_pairs(judge_hash, pairs, replace=first)
        first = False
        n_cands += len(cands)
        n_pairs += len(pairs)
    return stats.as_dict() | judge.report() | {"candidates": n_cands, "ai_pairs": n_pairs}


def _details_of(judge: JudgeBackend, constitution: Constitution):
    """``_details`` with the parts that are the same for every pair of the run computed once."""
    chash, phashes, ident = constitution.hash, {p.id: p.hash for p in constitution.principles}, JudgeIdentity.of(judge)

    def details(method: str, principles: dict[str, PrincipleDetail], gap: float | None = None,
                position_consistent: bool | None = None) -> PairDetails:
        return PairDetails(method, gap, position_consistent, principles, chash, phashes, ident)

    return details


def _rank_part(constitution: Constitution, cands: list, items: list[Item], mode: str, temperature: float,
               pair_temperature: float | None, total, details) -> list[tuple]:
    """The AI pairs of the prompts of one part: rank each prompt's candidates by ``total``."""
    by_prompt: dict[str, list[tuple]] = {}
    for c, it in zip(cands, items):
        by_prompt.setdefault(c.prompt_id, []).append((c, it))
    pairs = []
    for pid, group in by_prompt.items():
        seen, totals, item = set(), [], {}
        for c, it in group:
            t = total(it)
            if t is None or c.text.strip() in seen:
                continue
            seen.add(c.text.strip())
            totals.append((c.id, t))
            item[c.id] = it
        for chosen, rejected, gap in rank_pairs(totals, mode):
            ic, ir = item[chosen], item[rejected]
            principles = {}
            for p in constitution.principles:
                if p.id not in ic.verdicts and p.id not in ir.verdicts:
                    continue  # does not apply to this prompt
                sc, sr = ic.score(p.id), ir.score(p.id)
                ok = sc is not None and sr is not None
                principles[p.id] = PrincipleDetail(sigmoid((sc - sr) / temperature) if ok else None, sc, sr,
                                                   status="scored" if ok else "unscored")
            pairs.append((pid, chosen, rejected, confidence(gap, pair_temperature or temperature), "scored",
                          details("pointwise", principles, gap=gap)))
    return pairs


def _pairwise_details(judge: JudgeBackend, constitution: Constitution, comp: Comparison, flip: bool = False
                      ) -> PairDetails:
    """``flip``: the comparison was asked (rejected, chosen)."""
    principles = {}
    for pid, v in comp.verdicts.items():
        p = v.p_first if v.p_first is None or not flip else 1.0 - v.p_first
        principles[pid] = PrincipleDetail(p, rationale=v.rationale, position_consistent=v.position_consistent,
                                          status=v.status, raw=v.raw)
    flags = [v.position_consistent for v in comp.verdicts.values() if v.position_consistent is not None]
    return _details(judge, constitution, "pairwise", principles, position_consistent=all(flags) if flags else None)


def judge_pairwise(store, judge: JudgeBackend, constitution: Constitution, gen_hash: str, judge_hash: str,
                   mode: str, principle_mode: str, seed: int, batch_size: int, p_first=None) -> dict:
    """Pairwise: compare the candidates of each prompt, rank by mean P(win), store AI pairs. ``p_first``
    (Comparison -> float | None): default the constitution's weighted mean (fitted: rlaif/fit_weights.py)."""
    p_first = p_first or (lambda comp: comp.p_first(constitution))
    by_prompt, comps, prompt_of = pair_comparisons(store, constitution, gen_hash, principle_mode, seed)
    stats = compare_items(judge, list(comps.values()), batch_size)

    label: dict[tuple[str, str], float] = {}
    rows, unscored_rows = [], []
    for (a, b), comp in comps.items():
        pa = p_first(comp)
        if pa is None:
            unscored_rows.append((prompt_of[(a, b)], a, b, 0.5, "unscored", _pairwise_details(judge, constitution, comp)))
            continue
        label[(a, b)] = pa
        label[(b, a)] = 1.0 - pa
    for pid, cands in by_prompt.items():
        wins = {}
        for c in cands:
            ps = [label[(c.id, o.id)] for o in cands if (c.id, o.id) in label]
            if ps:
                wins[c.id] = sum(ps) / len(ps)
        ranked = sorted(wins, key=lambda cid: (-wins[cid], cid))
        for x, y in ranked_pairs(ranked, mode):
            px = label.get((x, y))
            if px is None or px == 0.5:
                continue
            chosen, rejected = (x, y) if px > 0.5 else (y, x)
            flip = (chosen, rejected) not in comps  # the comparison was asked as (rejected, chosen)
            comp = comps[(rejected, chosen) if flip else (chosen, rejected)]
            rows.append((pid, chosen, rejected, max(px, 1 - px), "scored",
                         _pairwise_details(judge, constitution, comp, flip)))
    store.put_ai_pairs(judge_hash, rows + unscored_rows)
    return {"comparisons": len(comps), "ai_pairs": len(rows), "unscored_comparisons": len(unscored_rows),
            "candidates": sum(len(c) for c in by_prompt.values()), **(stats.as_dict() | judge.report())}

"""Running a judge over many responses: cache, batches, aggregation, pairs.

Backends only score; this module owns the judge-call cache (keyed by
content, so a re-run makes no calls and editing one principle re-judges only
that principle), commits after each batch (a kill loses at most the batch in
flight), and turns per-principle scores into rankings and pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlaif.constitution import Constitution
from rlaif.judges.base import Judge, Verdict, cache_key
from rlaif.judges.ranking import aggregate, confidence, rank_pairs, sigmoid

# Texts handed to ``Judge.prepare`` at a time: large enough that a local encoder batches well, small
# enough that its memo and memory stay bounded.
PREPARE_TEXTS = 2048


@dataclass
class JudgeStats:
    calls: int = 0
    cache_hits: int = 0
    unscored: int = 0

    def as_dict(self) -> dict:
        return {"calls": self.calls, "cache_hits": self.cache_hits, "unscored": self.unscored}


@dataclass
class Item:
    prompt: str
    category: str | None
    response: str
    verdicts: dict[str, Verdict] = field(default_factory=dict)

    def total(self, constitution: Constitution) -> float | None:
        scores = {pid: v.score for pid, v in self.verdicts.items() if v.status == "scored"}
        return aggregate(scores, constitution, self.category)


def score_items(judge: Judge, constitution: Constitution, items: list[Item], store=None, batch_size: int = 64,
                progress: str | None = None) -> JudgeStats:
    """Fill ``item.verdicts`` for every applicable principle; use and fill the store's cache.

    Work goes in chunks of ``batch_size`` (principle, item) pairs, each chunk's new verdicts
    committed to ``store`` before the next chunk's are read. A judge with ``score_batches``
    (the LLM judges) gets the chunks' per-principle groups as one stream, so its next calls
    are in flight while a group is read back.
    """
    from rlaif.progress import task

    stats = JudgeStats()
    work = [(p, it) for it in items for p in constitution.principles if p.applies(it.category)]
    chunks = [work[s:s + batch_size] for s in range(0, len(work), batch_size)]
    keys = [[cache_key(judge, p, it.prompt, it.response) for p, it in chunk] for chunk in chunks]
    groups: list[tuple[int, str, list[int]]] = []  # (chunk index, principle id, indices in the chunk)
    for c, chunk in enumerate(chunks):
        cached = store.cache_get_many(keys[c]) if store is not None else {}
        by_principle: dict[str, list[int]] = {}
        for i, ((p, it), k) in enumerate(zip(chunk, keys[c])):
            if k in cached:
                it.verdicts[p.id] = Verdict(**cached[k])
                stats.cache_hits += 1
            else:
                by_principle.setdefault(p.id, []).append(i)
        groups += [(c, pid, idxs) for pid, idxs in by_principle.items()]

    todo_texts: dict[int, list[str]] = {}  # chunk -> the responses its uncached calls read
    for c, _, idxs in groups:
        todo_texts.setdefault(c, []).extend(chunks[c][i][1].response for i in idxs)

    def calls():
        prepared = 0  # chunks handed to judge.prepare so far
        for c, pid, idxs in groups:
            if c >= prepared:  # the texts of the next chunks, in one large backend call
                texts: list[str] = []
                while prepared < len(chunks) and len(texts) < PREPARE_TEXTS:
                    texts += todo_texts.get(prepared, [])
                    prepared += 1
                judge.prepare(list(dict.fromkeys(texts)))
            yield ([chunks[c][i][1].prompt for i in idxs], [chunks[c][i][1].response for i in idxs],
                   constitution.principle(pid))

    stream = judge.score_batches(calls()) if hasattr(judge, "score_batches") else (judge.score(*b) for b in calls())
    left = [0] * len(chunks)  # groups not yet read back, per chunk
    for c, _, _ in groups:
        left[c] += 1
    fresh: dict[str, dict] = {}
    done = 0  # chunks finished, in order

    def finish_ready(advance) -> None:
        nonlocal done, fresh
        while done < len(chunks) and left[done] == 0:
            chunk = chunks[done]
            if store is not None and fresh:
                store.cache_put_many(fresh)  # committed before the next chunk is read
            fresh = {}
            stats.unscored += sum(1 for p, it in chunk if it.verdicts[p.id].status != "scored")
            advance(len(chunk), info=f"{stats.calls} calls, {stats.cache_hits} cached")
            done += 1

    with task(progress or "judge", len(work)) as advance:
        finish_ready(advance)
        for (c, pid, idxs), verdicts in zip(groups, stream):
            stats.calls += len(idxs)
            for i, v in zip(idxs, verdicts):
                chunks[c][i][1].verdicts[pid] = v
                fresh[keys[c][i]] = {"score": v.score, "status": v.status, "raw": v.raw}
            left[c] -= 1
            finish_ready(advance)
    return stats


def judge_candidates(store, judge: Judge, constitution: Constitution, gen_hash: str, judge_hash: str,
                     mode: str, temperature: float, batch_size: int) -> dict:
    """Score every candidate, store judgements, rank per prompt, store AI pairs."""
    prompts = {p.id: p for p in store.prompts("train")}
    cands = [c for c in store.candidates(gen_hash) if c.prompt_id in prompts]
    items = [Item(prompts[c.prompt_id].text, prompts[c.prompt_id].category, c.text) for c in cands]
    # LLM judges cache each call themselves (finer keys); others are cached per item here.
    own_cache = getattr(judge, "caches_calls", False)
    stats = score_items(judge, constitution, items, None if own_cache else store, batch_size)
    rows = [
        (c.id, pid, constitution.principle(pid).hash, v.score, v.status, v.raw)
        for c, it in zip(cands, items) for pid, v in it.verdicts.items()
    ]
    store.put_judgements(judge_hash, rows)

    by_prompt: dict[str, list[tuple]] = {}
    for c, it in zip(cands, items):
        by_prompt.setdefault(c.prompt_id, []).append((c, it))
    pairs = []
    for pid, group in by_prompt.items():
        # Identical texts compete once; candidates with no score are left out.
        seen, totals, per = set(), [], {}
        for c, it in group:
            t = it.total(constitution)
            if t is None or c.text.strip() in seen:
                continue
            seen.add(c.text.strip())
            totals.append((c.id, t))
            per[c.id] = {k: v.score for k, v in it.verdicts.items()}
        for chosen, rejected, gap in rank_pairs(totals, mode):
            principles = {}
            for p in constitution.principles:
                sc, sr = per[chosen].get(p.id), per[rejected].get(p.id)
                if p.id not in per[chosen] and p.id not in per[rejected]:
                    continue  # does not apply to this prompt
                ok = sc is not None and sr is not None
                principles[p.id] = {
                    "p_chosen": sigmoid((sc - sr) / temperature) if ok else None,
                    "score_chosen": sc, "score_rejected": sr, "rationale": None,
                    "position_consistent": None, "status": "scored" if ok else "unscored", "raw": None}
            pairs.append((pid, chosen, rejected, confidence(gap, temperature), "scored", {
                "method": "pointwise", "gap": gap, "position_consistent": None, "principles": principles,
                "constitution_hash": constitution.hash,
                "principle_hashes": {p.id: p.hash for p in constitution.principles},
                "judge": {"backend": judge.backend, "model": judge.model, "template_hash": judge.template_hash},
            }))
    store.put_ai_pairs(judge_hash, pairs)
    counts = judge.report() if own_cache else stats.as_dict()
    return counts | {"candidates": len(cands), "ai_pairs": len(pairs)}

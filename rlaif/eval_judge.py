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


def eval_judge(pairs_path: str, constitution_path: str, backend: str = "embedding", model: str = "minilm",
               limit: int | None = None, batch_size: int = 64, device: str = "cpu",
               category: str | None = None) -> dict:
    from rlaif.config import JudgeConfig
    from rlaif.constitution import load_constitution
    from rlaif.judges import make_judge
    from rlaif.judges.run import Item, score_items
    from rlaif.train.common import quiet_hf

    constitution = load_constitution(constitution_path)
    rows = load_ab_pairs(pairs_path, limit)
    quiet_hf()
    judge = make_judge(JudgeConfig(backend=backend, model=model, constitution=constitution_path,
                                   batch_size=batch_size), device)
    # The pairs carry no prompt category: every principle applies unless the
    # caller names the category of the whole file (e.g. harmful for red-team sets).
    items = [Item(r["prompt"], category, r[k]) for r in rows for k in ("response_a", "response_b")]
    stats = score_items(judge, constitution, items, None, batch_size, progress="eval-judge")
    pred = []
    per_principle: dict[str, list[str]] = {p.id: [] for p in constitution.principles}
    for i in range(0, len(items), 2):
        a, b = items[i], items[i + 1]
        ta, tb = a.total(constitution), b.total(constitution)
        pred.append("tie" if ta is None or tb is None or ta == tb else ("A" if ta > tb else "B"))
        for p in constitution.principles:
            if p.id not in a.verdicts:
                continue
            va, vb = a.verdicts[p.id].score, b.verdicts[p.id].score
            per_principle[p.id].append("tie" if va is None or vb is None or va == vb else ("A" if va > vb else "B"))
    human = [r["label"] for r in rows]
    result = agreement(human, pred)
    result.update({"pairs": len(rows), "human_ties": human.count("tie"), "unscored": stats.unscored,
                   "backend": judge.backend, "model": judge.model, "constitution": constitution.name,
                   "constitution_hash": constitution.hash,
                   "category": category,
                   "per_principle": {pid: agreement(human, p) for pid, p in per_principle.items() if p}})
    return result

"""What a constitution change does to a run (`rlaif constitution diff OLD NEW --run DIR`).

- **Re-judge cost**: the run's judge, rebuilt from its manifest as a *planned* judge
  (rlaif/judges/plan.py: the same cache keys, no model, no call), goes through the judging core
  over the run's candidates under the new constitution, one principle at a time. A call whose key
  is in the run's call cache is free; the others are what ``rlaif judge`` would pay, with their
  estimated cost at the configured prices (LLM backends). With ``judge.weights: fitted`` the
  human pairs the judge stage fits on are planned too: the run's own split (``Run.human_split`` of
  the run as its manifest records it), so the rows are the judge stage's.
- **Label changes** (once ``rlaif judge`` has run with the new constitution): the run store keeps
  every AI pair set under its judge hash and records which constitution and candidates each was
  judged under (``Store.judge_sets``); the newest set of each constitution on the run's current
  candidates are compared pair by pair (a pair is a prompt's two candidates, either order): pairs
  *flipped* (the other candidate chosen), *appeared*, *disappeared*; and per principle, over the
  pairs in both sets, the principle's verdicts that flipped, appeared or disappeared.
"""

from __future__ import annotations

from pathlib import Path

from rlaif.constitution import Constitution
from rlaif.constitution_diff import ConstitutionDiff
from rlaif.errors import RlaifError

# What the plan reads of a run's recorded config (the judge section; Run.human_split: seed, mix, the policy-eval
# prompts of eval and data.system_prompt; name and data.prompts are required): a section whole, or (a tuple) some
# of its fields. Only these are validated: a manifest written by an older rlaif whose other sections or fields
# hold a key this one no longer takes (or lack one it added) plans as before, while a change in what the plan
# reads is still an error naming the field.
_PLAN_READS = {"name": None, "seed": None, "judge": None, "mix": None, "data": ("prompts", "system_prompt"),
               "eval": ("prompts", "max_prompts")}


def _plan_part(recorded: dict) -> dict:
    out = {}
    for k, fields in _PLAN_READS.items():
        if k in recorded:
            v = recorded[k]
            out[k] = {f: v[f] for f in fields if f in v} if fields and isinstance(v, dict) else v
    return out


def _recorded_run(run_dir: Path, store, constitution_path: str):
    """The run as its manifest records it, for reading (no inputs loaded, no lock): a ``Run`` on ``store``
    with the recorded config and round, so the human split comes from its owner (``Run.human_split``: the
    same pairs the judge stage fits on, the policy-eval prompts' held out), and the run's judge section with
    ``constitution`` pointing at the new file."""
    from pydantic import ValidationError

    from rlaif import safeio
    from rlaif.config import PipelineConfig
    from rlaif.layout import RunLayout
    from rlaif.pipeline import Run
    from rlaif.rounds import recorded_context

    layout = RunLayout(run_dir)
    path = layout.manifest
    if not path.is_file():
        raise RlaifError(f"{run_dir}: no manifest.json (run `rlaif run CONFIG` or a stage first)")
    try:
        m = safeio.loads_bounded(safeio.read_text(path, "manifest", safeio.max_yaml_bytes()), str(path))
        cfg = PipelineConfig.model_validate(_plan_part(m["config"]))
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise RlaifError(f"{path}: config.{where}: {err['msg']}; re-run a stage to rewrite it") from None
    except RlaifError as e:  # too large, not UTF-8, nested too deep
        raise RlaifError(f"{e}; re-run a stage to rewrite it") from None
    except (ValueError, KeyError, TypeError) as e:
        raise RlaifError(f"{path}: unreadable run manifest ({type(e).__name__}: {str(e)[:80]}); re-run a stage to "
                         "rewrite it") from None
    try:
        ctx = recorded_context(m)
    except (ValueError, KeyError, TypeError) as e:  # pydantic's ValidationError is a ValueError
        raise RlaifError(f"{path}: unreadable round (round, round_1_dir, iteration: {type(e).__name__}); re-run a "
                         "stage to rewrite it") from None
    jcfg = cfg.judge.model_copy(update={"constitution": constitution_path})
    return Run(cfg, layout, None, store=store, round=ctx), jcfg


def _gen_hash(store, run_dir: Path) -> str:
    rec = store.stage("generate")
    gh = (rec or {}).get("info", {}).get("gen_hash")
    if not gh:
        raise RlaifError(f"{run_dir}: no candidates generated yet (run `rlaif generate CONFIG` first)")
    return gh


def _fit_rows(run) -> list[dict]:
    """``judge.weights: fitted``: the human pairs the judge stage also judges (the fit's training pairs, then
    the held-out comparison's), from the same split (``Run.human_split``) and oriented the same way
    (``fit_weights.fit_for_run``)."""
    from rlaif.fit_weights import orient

    train, held = run.human_split()
    return orient(train)[0] + orient(held)[0]


def rejudge_calls(store, jcfg, seed: int, new: Constitution, gen_hash: str, fit_rows: list[dict] | None = None) -> dict:
    """Per principle of ``new``: the calls a re-judge would make (not in the run's call cache), the
    calls it would make without any cache, and the estimated cost (LLM backends with prices). With
    ``judge.weights: fitted`` the human pairs the fit reads (``fit_rows``: ``_fit_rows``) are judged too
    and counted."""
    from rlaif.judges import plan_judge
    from rlaif.judges.core import Comparison, compare_items, score_items
    from rlaif.judges.run import candidate_items, pair_comparisons

    judge = plan_judge(jcfg, seed, store)
    completer = getattr(judge, "completer", None)
    out: dict[str, dict] = {}
    pairwise = jcfg.resolved_method == "pairwise"
    if pairwise:
        _, comps, _ = pair_comparisons(store, new, gen_hash, jcfg.principles, seed)
    else:
        _, items = candidate_items(store, gen_hash)
    for p in new.principles:
        before = completer.cost_usd() if completer is not None else None
        if pairwise:
            sub = [Comparison(c.prompt, c.category, c.a, c.b, [p]) for c in comps.values()
                   if any(q.id == p.id for q in c.principles)]
            stats = compare_items(judge, sub, jcfg.batch_size, progress=f"plan {p.id}")
            asked = len(sub)
        else:
            one = new.model_copy(update={"principles": [p]})
            stats = score_items(judge, one, items, jcfg.batch_size, progress=f"plan {p.id}")
            asked = sum(p.applies(it.category) for it in items)
        if fit_rows:
            from rlaif.fit_weights import gather_evidence

            calls_before, hits_before = judge.report().get("calls", 0), judge.report().get("cache_hits", 0)
            gather_evidence(judge, new.model_copy(update={"principles": [p]}), fit_rows, jcfg, None, seed)
            stats.calls += judge.report().get("calls", 0) - calls_before
            stats.cache_hits += judge.report().get("cache_hits", 0) - hits_before
            asked += len(fit_rows) * (1 if pairwise else 2)
        after = completer.cost_usd() if completer is not None else None
        out[p.id] = {"calls": stats.calls, "cached_calls": stats.cache_hits, "judged_items": asked,
                     "cost_usd": None if after is None else after - (before or 0.0)}
    return out


def _pair_sets(store, judge_hash: str) -> dict[tuple, dict]:
    """Scored AI pairs by (prompt id, the two candidate ids sorted)."""
    return {(a["prompt_id"], tuple(sorted((a["chosen_id"], a["rejected_id"])))): a
            for a in store.ai_pairs(judge_hash) if a.get("status", "scored") == "scored"}


def _directions(pair: dict, toward: str) -> dict[str, int | None]:
    """Per principle of the pair: +1 when it prefers candidate ``toward``, -1 against, 0 tie, None no verdict.
    The pair's details are parsed once (once per principle made the label comparison quadratic in principles:
    12 s for 20,000 pairs of 6 principles)."""
    from rlaif.judges.details import PairDetails

    out: dict[str, int | None] = {}
    for pid, d in PairDetails.from_dict(pair["details"]).principles.items():
        if d.p_chosen is None:
            out[pid] = None
            continue
        p = d.p_chosen if pair["chosen_id"] == toward else 1.0 - d.p_chosen
        out[pid] = 0 if p == 0.5 else (1 if p > 0.5 else -1)
    return out


def label_changes(store, old_hash: str, new_hash: str, gen_hash: str) -> dict:
    """Compare the AI pairs judged under the two constitutions (see the module docstring)."""
    old_sets, new_sets = store.judge_sets(old_hash, gen_hash), store.judge_sets(new_hash, gen_hash)
    missing = [name for name, s in (("old", old_sets), ("new", new_sets)) if not s]
    if missing:
        return {"available": False,
                "reason": f"no AI pairs judged under the {' and '.join(missing)} constitution on this run's "
                          "candidates; run `rlaif judge CONFIG` with it to compare labels"}
    old, new = _pair_sets(store, old_sets[0]), _pair_sets(store, new_sets[0])
    both = old.keys() & new.keys()
    flipped = [k for k in both if old[k]["chosen_id"] != new[k]["chosen_id"]]
    per: dict[str, dict[str, int]] = {}
    for k in both:
        a, b = old[k], new[k]
        toward = a["chosen_id"]
        da, db = _directions(a, toward), _directions(b, toward)
        for pid in da.keys() | db.keys():
            x, y = da.get(pid), db.get(pid)
            e = per.setdefault(pid, {"flipped": 0, "appeared": 0, "disappeared": 0, "flipped_with_pair": 0})
            if x is None and y is not None:
                e["appeared"] += 1
            elif x is not None and y is None:
                e["disappeared"] += 1
            elif x and y and x != y:
                e["flipped"] += 1
                e["flipped_with_pair"] += a["chosen_id"] != b["chosen_id"]
    return {"available": True, "old_judge_hash": old_sets[0], "new_judge_hash": new_sets[0],
            "pairs_old": len(old), "pairs_new": len(new), "pairs_in_both": len(both), "flipped": len(flipped),
            "appeared": len(new.keys() - old.keys()), "disappeared": len(old.keys() - new.keys()),
            "per_principle": per}


def run_effects(diff: ConstitutionDiff, new: Constitution, new_path: str, run_dir: str | Path) -> dict:
    """Calls and cost of a re-judge, and the label changes once it has run (``diff``: OLD vs NEW)."""
    from rlaif.viewer.queue import open_run_store

    d = Path(run_dir)
    with open_run_store(d, readonly=True) as store:
        run, jcfg = _recorded_run(d, store, new_path)
        gen_hash = _gen_hash(store, d)
        fit_rows = _fit_rows(run) if jcfg.weights == "fitted" else None
        calls = rejudge_calls(store, jcfg, run.cfg.seed, new, gen_hash, fit_rows)
        labels = label_changes(store, diff.old_hash, diff.new_hash, gen_hash)
    per: dict[str, dict] = {pid: dict(v) for pid, v in calls.items()}
    for pid, v in labels.get("per_principle", {}).items():
        per.setdefault(pid, {}).update(v)
    costs = [v["cost_usd"] for v in calls.values() if v.get("cost_usd") is not None]
    return {"run": str(d), "judge": {"backend": jcfg.backend, "model": jcfg.model, "method": jcfg.resolved_method},
            "rejudge_calls": sum(v["calls"] for v in calls.values()),
            "calls_without_cache": sum(v["calls"] + v["cached_calls"] for v in calls.values()),
            "rejudge_cost_usd": sum(costs) if costs else None,
            "labels": {k: v for k, v in labels.items() if k != "per_principle"}, "per_principle": per}

"""The agreement gate (``mix.min_judge_agreement``): no training on labels from a judge that
disagrees with people.

Before ``train-rm`` and ``train-policy`` run, the configured judge votes on the mix's held-out
human preference labels (the split ``rlaif/mixing.py`` never trains on; through the run's call
cache, so a repeat is free), and its accuracy on them (human ties are not preference labels, so
none are counted) is compared with the threshold. Below it the stage stops with exit 2, naming
the principles that agree least and the `rlaif view` command to inspect them; ``--force`` runs
the stage anyway. Either way the check is recorded in the stage's info and in the report.
"""

from __future__ import annotations

from rlaif.errors import RlaifError

WORST_SHOWN = 3


def held_out_agreement(run) -> dict:
    """The judge's agreement with the held-out human labels: accuracy, kappa, n, 95% Wilson interval, and
    the same per principle. The chosen text is shown as A for every other label (so kappa means something).
    The judge votes with the weights that ranked the AI labels: the constitution's, or with ``judge.weights:
    fitted`` those the judge stage fitted (``weights`` in the result says which)."""
    from rlaif.eval_judge import judge_rows
    from rlaif.evaluate import agreement, wilson
    from rlaif.fit_weights import FittedWeights, fitted_votes, orient
    from rlaif.judges import make_judge
    from rlaif.judges.base import close_judge

    weights = run.cfg.judge.weights
    _, held = run.human_split()
    if not held:
        return {"accuracy": None, "n": 0, "ci95": None, "per_principle": {}, "weights": weights}
    rows, prefers_a = orient(held)
    human = ["A" if p else "B" for p in prefers_a]
    fitted = None
    if weights == "fitted":  # the AI labels were ranked with the weights the judge stage fitted: measure those
        recorded = run.results_of("judge").get("fitted_weights")
        if not recorded:
            raise RlaifError("judge.weights: fitted, but the judge stage has recorded no fitted weights; run "
                             "`rlaif judge` (or `rlaif run`) first")
        fitted = FittedWeights.from_dict(recorded)
    judge = make_judge(run.cfg.judge, run.device, run.cfg.seed, run.store)
    try:
        if fitted is not None:
            votes, per_principle = fitted_votes(fitted, judge, run.inputs.constitution, rows, run.cfg.judge,
                                                run.cfg.seed)
        else:
            votes, per_principle, _ = judge_rows(judge, run.inputs.constitution, rows, run.cfg.judge, None,
                                                 run.cfg.seed)
    finally:
        close_judge(judge)
    out = agreement(human, votes)
    out["weights"] = weights
    out["ci95"] = wilson(round((out["accuracy"] or 0) * out["n"]), out["n"])
    out["per_principle"] = {pid: agreement(human, v) for pid, v in per_principle.items()
                            if any(x is not None for x in v)}
    return out


def check_gate(run, stage: str, force: bool) -> dict | None:
    """None when the gate is off; else the check's record. Raises RlaifError (exit 2) when the judge's
    held-out accuracy is below ``mix.min_judge_agreement`` and ``force`` is not set."""
    threshold = run.cfg.mix.min_judge_agreement
    if threshold is None:
        return None
    from rlaif.progress import console

    a = held_out_agreement(run)
    per = a["per_principle"]
    worst = sorted((pid for pid in per if per[pid]["accuracy"] is not None), key=lambda pid: per[pid]["accuracy"])
    record = {"threshold": threshold, "weights": a["weights"], "accuracy": a["accuracy"], "ci95": a["ci95"], "n": a["n"],
              "worst_principles": {pid: per[pid]["accuracy"] for pid in worst[:WORST_SHOWN]},
              "passed": a["accuracy"] is not None and a["accuracy"] >= threshold, "forced": False}
    if record["passed"]:
        console.print(f"agreement gate: judge accuracy ({a['weights']} weights) {a['accuracy']:.3f} on {a['n']} "
                      f"held-out human labels >= {threshold} (mix.min_judge_agreement)")
        return record
    if a["n"] == 0:
        why = ("no held-out human labels to measure the judge on (mix.human_labels and "
               "mix.human_eval_fraction > 0 make some)")
    else:
        lo, hi = a["ci95"]
        names = ", ".join(f"{pid} {acc:.2f}" for pid, acc in record["worst_principles"].items())
        why = (f"judge accuracy ({a['weights']} weights) {a['accuracy']:.3f} (95% CI {lo:.2f}-{hi:.2f}) on {a['n']} "
               f"held-out human labels is below mix.min_judge_agreement={threshold}; least agreeing principles: "
               f"{names or 'none scored'}; "
               f"inspect them with `rlaif view {run.workdir} --principle {worst[0] if worst else 'ID'}`")
    if not force:
        raise RlaifError(f"{stage} stopped by the agreement gate: {why}; fix the constitution or judge, "
                         f"or train anyway with `rlaif {stage} CONFIG --force` (`rlaif run --force` would "
                         "redo every stage)")
    record["forced"] = True
    console.print(f"[bold yellow]agreement gate overridden by --force[/]: {why}")
    return record

"""report.json (figures) and report.md (a readable rendering with plots)."""

from __future__ import annotations

import json

from rlaif.evaluate import agreement


def _judge_human_agreement(run) -> dict:
    """How often the configured judge prefers what humans preferred.

    Human labels on an AI pair's own comparison (viewer labels) are compared
    with that AI label directly; every other human preference label is judged
    (through the cache) with the chosen text shown as A for half the items, so
    that kappa is meaningful. Their prompts carry no category: every
    principle applies. With ``judge.weights: fitted`` the weights were fitted to the human training pairs (and
    made the AI labels on them): the held-out pairs only, voted with the fitted weights (``gate.held_out_agreement``).
    """
    if run.cfg.judge.weights == "fitted":
        from rlaif.gate import held_out_agreement

        a = held_out_agreement(run)
        return {k: a.get(k) for k in ("accuracy", "kappa", "n")} | {"held_out_only": True}
    from rlaif.eval_judge import judge_rows
    from rlaif.judges import make_judge
    from rlaif.judges.base import close_judge
    from rlaif.records import pair_key
    from rlaif.vocab import PREFERENCE

    labels = [h for h in run.store.human_labels() if h.label == PREFERENCE]
    if not labels:
        return {"accuracy": None, "kappa": None, "n": 0}
    judge_hash = run.results_of("judge").get("judge_hash")
    ai = {pair_key(a["prompt"], a["chosen"], a["rejected"]): a
          for a in (run.store.labelled_ai_pairs(judge_hash) if judge_hash else []) if a["status"] == "scored"}
    human, pred, rows = [], [], []
    for i, h in enumerate(labels):
        first = "A" if i % 2 == 0 else "B"
        a, b = (h.chosen, h.rejected) if first == "A" else (h.rejected, h.chosen)
        human.append(first)
        if h.key in ai:
            pred.append("A" if ai[h.key]["chosen"].strip() == a.strip() else "B")
        else:
            pred.append(None)
            rows.append((len(pred) - 1, {"prompt": h.prompt, "response_a": a, "response_b": b, "uid": h.key}))
    if rows:
        judge = make_judge(run.cfg.judge, run.device, run.cfg.seed, run.store)
        try:
            votes, _, _ = judge_rows(judge, run.inputs.constitution, [r for _, r in rows], run.cfg.judge, None,
                                     run.cfg.seed)
        finally:
            close_judge(judge)
        for (i, _), v in zip(rows, votes):
            pred[i] = v
    return agreement(human, pred) | {"on_ai_pairs": len(labels) - len(rows)}


def critique_summary(run) -> dict:
    """The critique stage's counts, writer and sampling, and the revisions ``sft`` and the mix took ({} when off)."""
    if not run.cfg.critique.enabled:
        return {}
    c = run.results_of("critique")
    writer = c.get("writer") or {}
    return {**{k: c.get(k) for k in ("prompts", "revised", "passes", "reviser", "calls", "cache_hits",
                                     "failed_calls")},
            "writer": f"{writer.get('backend')} {writer.get('model')}", "sampling": c.get("sampling"),
            "sft_revision_examples": run.results_of("sft").get("revision_examples"),
            "mix_revision_pairs": run.results_of("mix").get("revision_pairs")}


def build_report(run) -> dict:
    from datasets import load_from_disk

    from rlaif.policy_eval import evaluate
    from rlaif.train.reward import RewardScorer

    cfg = run.cfg
    mixr, judger = run.results_of("mix"), run.results_of("judge")
    scorer = RewardScorer(run.layout.reward_model, run.device, cfg.reward_model.train.max_length)
    from rlaif.rounds import reward_model_eval_pairs

    # round 1's reward model reused in a later round: not measured on prompts it trained on
    ev, trained_in_round_1 = reward_model_eval_pairs(run, load_from_disk(str(run.layout.pairs))["eval"])
    rm_acc = scorer.accuracy(ev["prompt"], ev["chosen"], ev["rejected"])
    eval_prompts = run.policy_eval_prompts()
    pol = evaluate(run, scorer, eval_prompts) if eval_prompts else {}
    vs_sft = None
    from rlaif.rounds import context, provenance

    if context(run) is not None and eval_prompts:  # a round >= 2: also against the SFT policy (rounds_report.py)
        from rlaif.rounds_report import sft_comparison

        vs_sft = sft_comparison(run, pol, eval_prompts)
    agree = _judge_human_agreement(run)
    stages = run.store.stages()
    report = {
        "name": cfg.name,
        **provenance(run),
        "config_hash": cfg.hash,
        "constitution_hash": run.inputs.constitution.hash,
        "counts": {
            "prompts": len(run.inputs.prompts),
            "eval_prompts": len(eval_prompts),
            "candidates": run.results_of("generate").get("candidates"),
            # prompts a served policy could not take (over its context): no candidates (rlaif/generate_openai.py)
            "prompts_over_context": (run.results_of("generate").get("over_context") or {}).get("prompts", 0),
            "ai_pairs": judger.get("ai_pairs"),
            "human_pairs": mixr.get("human_pairs"),
            "train_pairs": mixr.get("train_pairs"),
            "eval_pairs": mixr.get("eval_pairs"),
        },
        "judge": {
            "backend": judger.get("backend"), "model": judger.get("model"),
            "template_hash": judger.get("template_hash"),
            "calls": judger.get("calls"), "cache_hits": judger.get("cache_hits"), "unscored": judger.get("unscored"),
            "retries": judger.get("retries"), "prompt_tokens": judger.get("prompt_tokens"),
            "completion_tokens": judger.get("completion_tokens"), "cost_usd": judger.get("cost_usd"),
            "position_consistency": judger.get("position_consistency"),
            "unscored_comparisons": judger.get("unscored_comparisons"),
            "human_agreement": agree.get("accuracy"), "human_agreement_kappa": agree.get("kappa"),
            "human_agreement_n": agree.get("n"),
        },
        "mix": {k: mixr.get(k) for k in ("human_overrides", "human_disagreements", "ai_dropped_low_confidence",
                                         "ai_dropped_held_out", "human_dropped_held_out",
                                         "revisions_dropped_held_out", "ai_dropped_policy_eval",
                                         "policy_eval_prompts_labelled", "ai_dropped_mix_ratio", "human_ties",
                                         "human_weight", "min_confidence", "max_ai_per_human", "eval_source",
                                         # single-response feedback (rlaif/feedback.py)
                                         "feedback_in", "feedback_pairs", "feedback_ties_dropped",
                                         "feedback_pairs_capped", "margin_pairs",
                                         "thumbs_paired", "thumbs_unpaired", "unpaired", "ai_feedback_agreements",
                                         "ai_feedback_disagreements", "ai_dropped_human_feedback",
                                         "feedback_pairing", "feedback_margin")}
        | {f"feedback_pairs_{k}": v for k, v in (mixr.get("feedback_pairs_by_kind") or {}).items()},
        "reward_model": {"eval_accuracy": rm_acc, "eval_pairs": len(ev), "eval_source": mixr.get("eval_source"),
                         "base": cfg.reward_model.base,
                         **({"eval_pairs_trained_in_round_1": trained_in_round_1}
                            if trained_in_round_1 is not None else {})},
        "policy": {
            "algorithm": cfg.policy_training.algorithm,
            **({"kto_examples": {k: run.results_of("train-policy").get(k) for k in
                                 ("desirable", "undesirable", "from_feedback", "from_pairs")}}
               if cfg.policy_training.algorithm == "kto" else {}),
            "eval_prompts": len(eval_prompts), "samples_per_prompt": cfg.eval.samples_per_prompt,
            # Independent of the reward model (policy_eval.py): the evidence that the loop helped.
            **(pol.get("independent") or {}),
            "reward_hacking_warning": pol.get("reward_hacking_warning"),
            # The reward model's own view: the training signal, not independent evidence.
            "reward_before": (pol.get("rm") or {}).get("reward_before"),
            "reward_after": (pol.get("rm") or {}).get("reward_after"),
            "kl": (pol.get("rm") or {}).get("kl"),
            "win_rate_vs_ref": (pol.get("rm") or {}).get("rm_win_rate_vs_ref"),
            "win_rate_vs_ref_ci95": (pol.get("rm") or {}).get("rm_win_rate_ci95"),
            **({"vs_sft": vs_sft} if vs_sft is not None else {}),
        },
        # judge.weights: fitted: the weights, and held-out human agreement with constitution vs fitted weights.
        "fitted_weights": _fitted(run, judger.get("fitted_weights")),
        # mix.min_judge_agreement: the check each training stage passed (or was forced past with --force).
        "agreement_gate": {s: run.results_of(s)["agreement_gate"] for s in ("train-rm", "train-policy")
                           if run.results_of(s).get("agreement_gate")},
        # critique.enabled: the stage's counts and what of it reached sft and the mix.
        "critique": critique_summary(run),
        "timings_s": {s: (stages.get(s) or {}).get("seconds") for s in ("critique", "sft", "generate", "judge", "mix",
                                                                           "train-rm", "train-policy")
                      if s != "critique" or cfg.critique.enabled},
        "_policy_detail": pol,
    }
    return report


def _plots(run, report: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    fig, ax = plt.subplots(figsize=(7, 3.5))
    algo = run.cfg.policy_training.algorithm.upper()
    for stage, label in (("sft", "SFT"), ("train-rm", "reward model"), ("train-policy", algo)):
        hist = run.results_of(stage).get("history") or []
        pts = [(h["step"], h["loss"]) for h in hist if "loss" in h and "step" in h]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=label)
    ax.set_xlabel("step"), ax.set_ylabel("training loss"), ax.legend(), ax.set_title("Training loss")
    fig.tight_layout()
    fig.savefig(run.layout.figure("loss"), dpi=90)
    plt.close(fig)
    out.append(("Training loss", "loss.png"))
    rl = _rl_plot(run, plt)
    if rl:
        out.append(rl)
    pol = report["_policy_detail"]
    if pol.get("rewards_before"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.hist([pol["rewards_before"], pol["rewards_after"]], bins=20, label=[reference_name(report), "trained policy"])
        ax.set_xlabel("reward-model score on held-out prompts"), ax.set_ylabel("samples"), ax.legend()
        ax.set_title("Reward before and after policy training")
        fig.tight_layout()
        fig.savefig(run.layout.figure("rewards"), dpi=90)
        plt.close(fig)
        out.append(("Reward before and after", "rewards.png"))
    return out


# Per-step metrics of online policy training (ppo, rloo, grpo), plotted when the history has them:
# one panel per entry, one line per key present (the reward panel shows the reward-model and judge
# means next to the total when policy_training.reward uses them; the judge panel its calls per step).
RL_METRICS = ((("reward", "rm_reward", "judge_reward"), "mean reward"),
              (("kl",), "KL to reference (per sequence)"), (("kl_per_token",), "KL to reference (per token)"),
              (("entropy",), "entropy (per token)"), (("clipfrac",), "policy clip fraction"),
              (("value_loss",), "value loss"),
              (("judge_calls", "judge_cache_hits", "judge_unscored"), "judge reward: calls per step"))
RL_LINE_LABELS = {"reward": "total", "rm_reward": "reward model", "judge_reward": "judge", "judge_calls": "calls",
                  "judge_cache_hits": "cache hits", "judge_unscored": "unscored rollouts"}


def _rl_plot(run, plt) -> tuple[str, str] | None:
    hist = run.results_of("train-policy").get("history") or []
    panels = []
    for keys, label in RL_METRICS:
        lines = [(k, [(h["step"], h[k]) for h in hist if k in h and "step" in h]) for k in keys]
        lines = [(k, pts) for k, pts in lines if pts]
        if lines:
            panels.append((label, lines))
    if not panels or panels[0][1][0][0] != "reward":
        return None  # no per-step reward: not an online algorithm
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.0), squeeze=False)
    for ax, (label, lines) in zip(axes[0], panels):
        for k, pts in lines:
            ax.plot(*zip(*pts), marker=".", label=RL_LINE_LABELS.get(k, k))
        if len(lines) > 1:
            ax.legend(fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step")
    algo = run.cfg.policy_training.algorithm.upper()
    fig.suptitle(f"{algo}: per-step training metrics")
    fig.tight_layout()
    fig.savefig(run.layout.figure("rl"), dpi=90)
    plt.close(fig)
    return (f"{algo} training (per step)", "rl.png")


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _ci(ci) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


READING = {"refusal": "refuses", "compliance": "does not refuse", "mixed": "refuses and goes along"}


def reference_name(report: dict) -> str:
    """The policy the trained one is compared with: the SFT policy, or in round k >= 2 of an iterative run
    the round's initial policy, round k-1's (rlaif/rounds.py; its figures against SFT are ``policy.vs_sft``)."""
    k = report.get("round") or 1
    return "SFT policy" if k == 1 else f"round {k - 1} policy"


def policy_lines(pol: dict, ref: str = "SFT policy") -> list[str]:
    """The policy section: independent figures first, the reward model's view labelled as such; ``ref``:
    ``reference_name``."""
    algo = (pol.get("algorithm") or "").upper()
    vs = "SFT" if ref == "SFT policy" else ref
    lines = ["## policy (held-out prompts)", "",
             f"{pol.get('eval_prompts')} held-out prompts × {pol.get('samples_per_prompt')} samples each; "
             "95% Wilson intervals in brackets.", "",
             f"| figure | {ref} | {algo} policy | n |", "|---|---|---|---|"]
    for key, label in (("harmless_rate", "harmless rate (harmful prompts refused; refusal classifier)"),
                       ("over_refusal_rate", "over-refusal rate (benign prompts refused; refusal classifier)")):
        f = pol.get(key)
        if f:
            lines.append(f"| {label} | {_pct(f['sft'])}{_ci(f['sft_ci95'])} | "
                         f"{_pct(f['trained'])}{_ci(f['trained_ci95'])} | {f['n']} |")
    deg = pol.get("degeneration")
    if deg:
        for k, label in (("repeated_3grams", "repeated word 3-grams"), ("novel_words", "words not in SFT corpus or prompt"),
                         ("mean_words", "mean words per response")):
            b, a = deg["sft"][k], deg["trained"][k]
            fmt = (lambda v: f"{v:.1f}") if k == "mean_words" else _pct
            lines.append(f"| degeneration: {label} | {fmt(b)} | {fmt(a)} | |")
    win = pol.get("judge_win_rate_vs_ref")
    lines.append("")
    kto = pol.get("kto_examples")
    if kto:
        lines.append(f"- KTO examples: {kto['desirable']} desirable, {kto['undesirable']} undesirable "
                     f"({kto['from_feedback']} from thumbs, {kto['from_pairs']} from the pairs unpaired)")
    if win:
        lines.append(f"- **judge win rate vs {vs}** ({win['method']}): {_pct(win['rate'])}{_ci(win['ci95'])}, "
                     f"n={win['n']} prompt-sample pairs, {win['ties']} ties, {win['unscored']} unscored")
    lines += [f"- reward-model score (the training signal, not independent evidence): "
              f"{_fmt(pol.get('reward_before'))} -> {_fmt(pol.get('reward_after'))}; RM win rate vs {vs} "
              f"{_pct(pol.get('win_rate_vs_ref'))}{_ci(pol.get('win_rate_vs_ref_ci95'))}; "
              f"KL to {vs} {_fmt(pol.get('kl'))}"]
    against = pol.get("vs_sft")
    if against:  # a round >= 2 measured against the SFT policy too (rlaif/rounds_report.py)
        w = against.get("judge_win_rate") or {}
        lines.append(f"- **against the SFT policy** (round 1's `sft`): judge win rate {_pct(w.get('rate'))}"
                     f"{_ci(w.get('ci95'))}, KL to SFT {_fmt(against.get('kl'))}, reward under round 1's reward "
                     f"model {_fmt(against.get('rm_reward_round_1'))}")
    return lines + [""]


def _fitted(run, fw: dict | None) -> dict | None:
    """The judge stage's fitted weights, marked when their held-out figures predate the current held-out split."""
    if not fw:
        return fw
    from rlaif.fit_weights import held_out_is_stale

    return fw | {"held_out_stale": held_out_is_stale(run, fw)}


def fitted_lines(fw: dict) -> list[str]:
    """judge.weights: fitted: held-out human agreement with both weightings, and each principle's weights."""
    lines = ["## fitted principle weights", "",
             f"Fitted on {fw['n_train']} human training pairs (L2 {fw['l2']}); intercept {fw['intercept']:.3f}"
             + (f"; length weight {fw['length']:.3f}" if fw.get("length") is not None else "") + ".", ""]
    ho = fw.get("held_out") or {}
    if fw.get("held_out_stale"):
        measured = ("The held-out figures below were measured when the judge stage ran" if ho else
                    "The judge stage had no held-out human pairs to measure on when it ran")
        lines += [f"> {measured}; the held-out human labels have changed since (they are not in the stage's input, "
                  "so it did not re-run). The agreement gate (`mix.min_judge_agreement`) measures the current ones; "
                  f"`rlaif judge --force` {'re-measures these' if ho else 'measures them here'}.", ""]
    if ho:
        for name in ("constitution", "fitted"):
            a = ho[name]
            ci = f" (95% CI {a['ci95'][0]:.3f}–{a['ci95'][1]:.3f})" if a.get("ci95") else ""
            lines.append(f"- held-out human agreement, {name} weights: {_fmt(a['accuracy'])}{ci}, n {a['n']}")
        lines += ["", "| principle | its own held-out agreement | constitution weight | fitted weight |",
                  "|---|---|---|---|"]
        lines += [f"| {pid} | {_fmt(v['agreement'])} | {_fmt(v['constitution_weight'])} | {_fmt(v['fitted_weight'])} |"
                  for pid, v in ho["per_principle"].items()]
    else:
        lines += ["No held-out human pairs: agreement not measured."]
    return lines + [""]


def render_markdown(run, report: dict, plots: list[tuple[str, str]]) -> str:
    lines = [f"# rlaif report: {report['name']}", "",
             f"config `{report['config_hash']}` · constitution `{report['constitution_hash']}`", ""]
    warning = report["policy"].get("reward_hacking_warning")
    if warning:
        lines += [f"> **Warning — {warning}.** The reward model's score is not evidence on its own.", ""]
    for section in ("counts", "critique", "judge", "mix", "reward_model", "policy", "timings_s"):
        if not report.get(section):  # critique: off
            continue
        if section == "policy":
            lines += policy_lines(report["policy"], reference_name(report))
            continue
        lines += [f"## {section}", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in report[section].items()]
        lines.append("")
    fw = report.get("fitted_weights")
    if fw:
        lines += fitted_lines(fw)
    for stage, g in report.get("agreement_gate", {}).items():
        verdict = "passed" if g["passed"] else ("**forced** past with --force" if g["forced"] else "stopped")
        acc = "—" if g["accuracy"] is None else f"{g['accuracy']:.3f}"
        weights = f" ({g['weights']} weights)" if g.get("weights") else ""
        lines += [f"Agreement gate before {stage}: judge accuracy{weights} {acc} on {g['n']} held-out human labels vs "
                  f"threshold {g['threshold']}: {verdict}.", ""]
    for title, fname in plots:
        lines += [f"## {title}", "", f"![{title}]({fname})", ""]
    samples = report["_policy_detail"].get("samples") or []
    if samples:
        k = report["_policy_detail"].get("samples_per_prompt") or 1
        firsts = samples[::k]  # the first sample of each held-out prompt, harmful and benign alternating
        harm = [s for s in firsts if s["category"] == "harmful"]
        other = [s for s in firsts if s["category"] != "harmful"]
        spread = lambda xs: xs[::max(1, len(xs) // 5)][:5]
        shown = [s for pair in zip(spread(harm), spread(other)) for s in pair]
        lines += ["## Samples (held-out prompts, first sample each)", "",
                  "In brackets: the refusal classifier's reading, then the reward-model score.", "",
                  f"| prompt | {reference_name(report)} | trained policy |", "|---|---|---|"]
        cell = lambda t: t.replace("|", "\\|").replace("\n", " ")[:220]
        for s in shown:
            lines.append(f"| ({s['category']}) {cell(s['prompt'])} | {cell(s['before'])} "
                         f"*({READING[s['label_before']]}, {s['reward_before']:.2f})* | {cell(s['after'])} "
                         f"*({READING[s['label_after']]}, {s['reward_after']:.2f})* |")
        lines.append("")
    return "\n".join(lines)


def write_report(run, report: dict) -> None:
    plots = _plots(run, report)
    md = render_markdown(run, report, plots)
    detail = report.pop("_policy_detail")
    from rlaif.outputs import write_whole

    write_whole(run.layout.samples_json, json.dumps(detail.get("samples", []), indent=1))
    write_whole(run.layout.report_json, json.dumps(report, indent=2))
    write_whole(run.layout.report_md, md)
    report["_policy_detail"] = detail
    warning = report["policy"].get("reward_hacking_warning")
    if warning:
        from rlaif.progress import console

        console.print(f"[bold red]WARNING[/]: {warning} (see report.md)")

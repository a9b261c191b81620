"""The per-round figures of an iterative run (rlaif/rounds.py): rounds.json, rounds.md, rounds.png and
the "Rounds" section of round 1's report.md.

Every round is measured on the same held-out prompts against the same baseline, the SFT policy
(round 1's ``sft``): the judge's win rate of the round's trained policy over the SFT policy's
samples, the harmless and over-refusal rates (the eval stage's refusal figures), the reward
under round 1's reward model (one yardstick for every round: with ``iteration.reward_model:
every_round`` each round has its own, whose scales differ) and the KL to the SFT policy. Round 1's
eval compares with the SFT policy already; a round k >= 2's eval compares with its initial policy
(round k-1's) and, through ``sft_comparison``, with the SFT policy too (``report.json``:
``policy.vs_sft``). The win rate against the previous round stays in the table as well.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rlaif.layout import RunLayout

# One row per round (rounds.json); the SFT policy's own figures are in every row's *_sft keys.
ROW_KEYS = ("round", "algorithm", "harmless_sft", "harmless", "harmless_ci95", "over_refusal_sft", "over_refusal",
            "judge_win_rate_vs_sft", "judge_win_rate_vs_sft_ci95", "judge_win_rate_vs_previous",
            "rm_reward_sft", "rm_reward", "kl_vs_sft", "dir")


def sft_comparison(run, pol: dict, held_out: list) -> dict:
    """Round k >= 2's eval against the SFT policy: the trained policy's held-out samples (``pol``, from
    policy_eval.evaluate) against the SFT policy's (same prompts, seed and sampling), judged by the
    configured judge; their KL to the SFT policy; their reward under round 1's reward model."""
    from rlaif.evaluate import sequence_logprobs
    from rlaif.generate import load_policy
    from rlaif.judges import make_judge
    from rlaif.judges.base import close_judge
    from rlaif.policy_eval import judge_win_rate, sample_many
    from rlaif.rounds import context
    from rlaif.train.reward import RewardScorer

    first = context(run).first
    samples = pol["samples"]
    prompts, cats = [s["prompt"] for s in samples], [s["category"] for s in samples]
    after = [s["after"] for s in samples]
    sft = [r for rs in sample_many(first.sft, [p.text for p in held_out], run.cfg.eval, run.cfg.seed, run.device)
           for r in rs]
    judge = make_judge(run.cfg.judge, run.device, run.cfg.seed, run.store)
    try:
        win = judge_win_rate(run, judge, prompts, cats, sft, after)
    finally:
        close_judge(judge)
    pol_model, tok = load_policy(run.layout.policy, run.device)
    sft_model, _ = load_policy(first.sft, run.device)
    tok.padding_side = "right"
    lp_pol = sequence_logprobs(pol_model, tok, prompts, after, run.device)
    lp_sft = sequence_logprobs(sft_model, tok, prompts, after, run.device)
    scorer = RewardScorer(first.reward_model, run.device, run.cfg.reward_model.train.max_length)
    rm = scorer.score(prompts, after)
    return {"sft_policy": str(first.sft), "judge_win_rate": win, "kl": sum(a - b for a, b in zip(lp_pol, lp_sft)) / len(after),
            "rm_reward_round_1": sum(rm) / len(rm)}


def round_row(report: dict, k: int, first: dict) -> dict:
    """Round ``k``'s row from its report.json (``first``: round 1's, whose initial policy is the SFT policy)."""
    pol, pol1 = report.get("policy") or {}, first.get("policy") or {}

    def rate(p: dict, name: str, which: str):
        return (p.get(name) or {}).get(which)

    win = pol.get("judge_win_rate_vs_ref") or {}
    if k == 1:  # round 1 started from the SFT policy: its own figures are the ones against SFT
        vs_sft = {"judge_win_rate": win, "kl": pol.get("kl"), "rm_reward_round_1": pol.get("reward_after")}
        previous = None
    else:
        vs_sft, previous = pol.get("vs_sft") or {}, win.get("rate")
    return {"round": k, "algorithm": pol.get("algorithm"),
            "harmless_sft": rate(pol1, "harmless_rate", "sft"), "harmless": rate(pol, "harmless_rate", "trained"),
            "harmless_ci95": rate(pol, "harmless_rate", "trained_ci95"),
            "over_refusal_sft": rate(pol1, "over_refusal_rate", "sft"),
            "over_refusal": rate(pol, "over_refusal_rate", "trained"),
            "judge_win_rate_vs_sft": (vs_sft.get("judge_win_rate") or {}).get("rate"),
            "judge_win_rate_vs_sft_ci95": (vs_sft.get("judge_win_rate") or {}).get("ci95"),
            "judge_win_rate_vs_previous": previous,
            "rm_reward_sft": pol1.get("reward_before"), "rm_reward": vs_sft.get("rm_reward_round_1"),
            "kl_vs_sft": vs_sft.get("kl")}


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _num(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def _ci(ci, scale: float = 1.0) -> str:
    return "" if not ci else f" [{scale * ci[0]:.{1 if scale > 1 else 3}f}, {scale * ci[1]:.{1 if scale > 1 else 3}f}]"


def rounds_table(rows: list[dict]) -> list[str]:
    """report.md lines: the SFT policy, then one row per round, every figure against the SFT policy."""
    out = ["| round | harmless rate | over-refusal | judge win rate vs SFT | judge win rate vs previous round | "
           "RM reward (round 1's RM) | KL vs SFT |", "|---|---|---|---|---|---|---|"]
    if rows:
        r0 = rows[0]
        out.append(f"| 0 (SFT) | {_pct(r0['harmless_sft'])} | {_pct(r0['over_refusal_sft'])} | 0.5 | — | "
                   f"{_num(r0['rm_reward_sft'])} | 0 |")
    for r in rows:
        out.append(f"| {r['round']} | {_pct(r['harmless'])}{_ci(r['harmless_ci95'], 100)} | {_pct(r['over_refusal'])} | "
                   f"{_num(r['judge_win_rate_vs_sft'])}{_ci(r['judge_win_rate_vs_sft_ci95'])} | "
                   f"{_num(r['judge_win_rate_vs_previous'])} | {_num(r['rm_reward'])} | {_num(r['kl_vs_sft'])} |")
    return out


ROUNDS_SECTION = "## Rounds"


def write_rounds_report(root: RunLayout, layouts: list[RunLayout]) -> list[dict]:
    """rounds.json, rounds.md, rounds.png in the first round's directory; a section in its report.md
    (each written whole or not at all: report.md is round 1's eval output, not written again by it)."""
    from rlaif.outputs import write_whole

    reports = [json.loads(lay.report_json.read_text()) if lay.report_json.exists() else {} for lay in layouts]
    rows = [round_row(rep, k, reports[0]) | {"dir": str(lay.root)}
            for k, (rep, lay) in enumerate(zip(reports, layouts), start=1)]
    write_whole(root.rounds_json, json.dumps(rows, indent=2))
    lines = [ROUNDS_SECTION, "", "Each round starts from the previous round's policy (round 1: the SFT policy); every "
             "round's trained policy is measured against the SFT policy on the held-out prompts (the judge's win "
             "rate, the KL, the reward under round 1's reward model), and the judge's win rate against the previous "
             "round's policy is shown too. Round k's run directory is `rounds/<k>/`.", "",
             *rounds_table(rows), "", "![rounds](rounds.png)", ""]
    write_whole(root.rounds_md, "\n".join(lines))
    _plot(root, rows)
    md = root.report_md
    if md.exists():  # replace an earlier rounds section, keep the rest of the report
        text = md.read_text()
        text = text.split("\n" + ROUNDS_SECTION + "\n")[0].rstrip("\n") + "\n\n"
        write_whole(md, text + "\n".join(lines))
    return rows


def _plot(root: RunLayout, rows: list[dict]) -> None:
    """One figure: a panel per figure of the table, round 0 being the SFT policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    r0 = rows[0]
    panels = (("harmless", r0["harmless_sft"], "harmless rate"), ("judge_win_rate_vs_sft", 0.5, "judge win rate vs SFT"),
              ("rm_reward", r0["rm_reward_sft"], "RM reward (round 1's RM)"), ("kl_vs_sft", 0.0, "KL vs SFT"))
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.0))
    for ax, (key, at_sft, label) in zip(axes, panels):
        pts = [(k, v) for k, v in [(0, at_sft)] + [(r["round"], r[key]) for r in rows] if v is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("round (0: SFT)")
        ax.set_xticks(range(len(rows) + 1))
    fig.suptitle("Iterative rounds: held-out figures against the SFT policy")
    fig.tight_layout()
    fig.savefig(root.figure("rounds"), dpi=90)
    plt.close(fig)

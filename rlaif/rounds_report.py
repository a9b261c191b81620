"""The per-round figures of an iterative run (rlaif/rounds.py): rounds.json, rounds.md, rounds.png and
the "Rounds" section of round 1's report.md."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rlaif.layout import RunLayout


def _figures(report: dict, k: int) -> dict:
    pol = report.get("policy") or {}

    def rate(name: str, which: str):
        return (pol.get(name) or {}).get(which)

    win = pol.get("judge_win_rate_vs_ref") or {}
    return {"round": k, "algorithm": pol.get("algorithm"),
            "harmless_initial": rate("harmless_rate", "sft"), "harmless": rate("harmless_rate", "trained"),
            "harmless_ci95": rate("harmless_rate", "trained_ci95"),
            "over_refusal_initial": rate("over_refusal_rate", "sft"),
            "over_refusal": rate("over_refusal_rate", "trained"),
            "judge_win_rate_vs_initial": win.get("rate"), "judge_win_rate_ci95": win.get("ci95"),
            "rm_reward_before": pol.get("reward_before"), "rm_reward_after": pol.get("reward_after"),
            "kl_vs_initial": pol.get("kl")}


def rounds_table(rows: list[dict]) -> list[str]:
    """report.md lines: one row per round (the round's initial policy is the previous round's)."""

    def pct(v):
        return "—" if v is None else f"{100 * v:.1f}"

    def num(v):
        return "—" if v is None else f"{v:.3f}"

    out = ["| round | harmless rate (initial → trained) | over-refusal (initial → trained) | judge win rate vs "
           "initial | RM score before → after | KL vs initial |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['round']} | {pct(r['harmless_initial'])} → {pct(r['harmless'])} | "
                   f"{pct(r['over_refusal_initial'])} → {pct(r['over_refusal'])} | {num(r['judge_win_rate_vs_initial'])} | "
                   f"{num(r['rm_reward_before'])} → {num(r['rm_reward_after'])} | {num(r['kl_vs_initial'])} |")
    return out


ROUNDS_SECTION = "## Rounds"


def write_rounds_report(root: RunLayout, layouts: list[RunLayout]) -> list[dict]:
    """rounds.json, rounds.md, rounds.png in the first round's directory; a section in its report.md."""
    rows = []
    for k, lay in enumerate(layouts, start=1):
        rep = json.loads(lay.report_json.read_text()) if lay.report_json.exists() else {}
        rows.append(_figures(rep, k) | {"dir": str(lay.root)})
    root.rounds_json.write_text(json.dumps(rows, indent=2))
    lines = [ROUNDS_SECTION, "", "Each round starts from the previous round's policy (round 1: the SFT policy) and is "
             "evaluated against it on the held-out prompts; round k's run directory is `rounds/<k>/`.", "",
             *rounds_table(rows), "", "![rounds](rounds.png)", ""]
    root.rounds_md.write_text("\n".join(lines))
    _plot(root, rows)
    md = root.report_md
    if md.exists():  # replace an earlier rounds section, keep the rest of the report
        text = md.read_text()
        text = text.split("\n" + ROUNDS_SECTION + "\n")[0].rstrip("\n") + "\n\n"
        md.write_text(text + "\n".join(lines))
    return rows


def _plot(root: RunLayout, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [0] + [r["round"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.0))
    for ax, (key, first, label) in zip(axes, (("harmless", "harmless_initial", "harmless rate"),
                                              ("over_refusal", "over_refusal_initial", "over-refusal rate"),
                                              (None, None, "per round"))):
        if key is None:
            for k2, lab in (("judge_win_rate_vs_initial", "judge win rate vs initial"), ("kl_vs_initial", "KL")):
                pts = [(r["round"], r[k2]) for r in rows if r[k2] is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=lab)
            ax.legend(fontsize=7)
        else:
            vals = [rows[0][first]] + [r[key] for r in rows]
            pts = [(k, v) for k, v in zip(ks, vals) if v is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("round (0: SFT)" if key else "round")
    fig.suptitle("Iterative rounds: held-out figures")
    fig.tight_layout()
    fig.savefig(root.figure("rounds"), dpi=90)
    plt.close(fig)

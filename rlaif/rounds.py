"""Iterative rounds (``rounds: N``, ``rlaif run --rounds N``): the trained policy is sampled again,
judged again, mixed with the human labels again, and trained again.

Round 1 is the run directory itself (a one-round run is exactly the pipeline of before). Round
k >= 2 is a complete run directory of its own, ``<run>/rounds/<k>/`` (RunLayout.round_dir), run
with the same config except that its initial ("SFT") policy is round k-1's trained policy
(``policy.model`` = that folder, ``policy.skip_sft``): its ``sft`` stage copies that policy, its
``generate`` samples candidates from it on the training prompts, ``judge`` labels them, ``mix``
mixes them with the human labels, ``train-rm`` trains the round's reward model, ``train-policy``
trains from round k-1's policy with round k-1's policy as the reference, and ``eval`` compares
it with round k-1's policy on the held-out prompts. So every artifact of a round (candidates,
judgements, AI pairs, models, report) lives in its round's directory and store.

Skipping and resuming are the pipeline's own, per round: an unchanged re-run skips every stage
of every round; a killed run resumes in the round it was in (the rounds before it are skipped).
The one thing the stage hashes cannot see is that round k-1's policy changed in place (its path
stays the same): round k records the hash of the policy it copied (``round_source.json``) and
redoes the copy (and the critique stage, whose first answers that policy writes) when it differs
(the stages after it then re-run if the copy's files differ). A round >= 2 trains no SFT, so its
critique stage's revisions reach training through the mix only (``critique.in_mix``).

After the last round ``rounds.json``, ``rounds.md`` and ``rounds.png`` in the run directory hold
the per-round figures (harmless and over-refusal rates on the held-out prompts, the judge's win
rate and the KL against the round's initial policy, the round's reward model's score before and
after), and report.md links them.

Not configurable yet: the reference is always the round's initial policy (not the SFT policy),
earlier rounds' AI pairs are not mixed into later rounds, and every round retrains the reward
model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rlaif.config import PipelineConfig
    from rlaif.layout import RunLayout
    from rlaif.pipeline import Run


def round_config(cfg: PipelineConfig, previous_policy: Path) -> PipelineConfig:
    """The config of a round >= 2: ``cfg`` started from ``previous_policy``, one round, its own workdir."""
    policy = cfg.policy.model_copy(update={"model": str(Path(previous_policy).resolve()), "skip_sft": True})
    return cfg.model_copy(update={"policy": policy, "rounds": 1, "workdir": None})


def _source_changed(layout: RunLayout, source_hash: str) -> bool:
    """Whether round k's ``sft`` copy was made from another version of round k-1's policy than
    ``source_hash`` (or from an unknown one: a copy exists but no stamp, e.g. after a kill)."""
    stamp = layout.round_source
    if not (layout.sft / "config.json").exists():
        return False  # no copy yet: the sft stage runs anyway
    if not stamp.exists():
        return True
    try:
        return json.loads(stamp.read_text()).get("policy_hash") != source_hash
    except (ValueError, AttributeError):
        return True


def _stamp_source(layout: RunLayout, source: Path, source_hash: str) -> None:
    tmp = layout.round_source.with_suffix(".tmp")
    tmp.write_text(json.dumps({"policy": str(source), "policy_hash": source_hash}))
    tmp.replace(layout.round_source)


def run_rounds(cfg: PipelineConfig, names: tuple[str, ...], workdir: str | None = None,
               force: bool = False) -> list[Run]:
    """Run ``names`` in every round (``cfg.rounds`` of them) and write the per-round figures."""
    from rlaif.hashing import dir_hash
    from rlaif.layout import RunLayout
    from rlaif.pipeline import run_pipeline

    runs = [run_pipeline(cfg, names, workdir, force=force)]
    root = runs[0].layout
    for k in range(2, cfg.rounds + 1):
        previous = runs[-1].layout.policy
        source_hash = dir_hash(previous)
        layout = RunLayout(root.round_dir(k))
        # The critique stage's first answers come from that policy too (its calls are keyed by its content).
        refresh = ("critique", "sft") if _source_changed(layout, source_hash) else ()
        runs.append(run_pipeline(round_config(cfg, previous), names, str(layout.root), force=force, refresh=refresh))
        _stamp_source(layout, previous, source_hash)
    if cfg.rounds > 1 and "eval" in names:
        write_rounds_report(root, [r.layout for r in runs])
    return runs


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

"""Fitted principle weights vs the constitution's, on human preference sets (issue #14).

    python bench/fitted_weights.py [--constitution constitutions/helpful_harmless.yaml] [--l2 1.0]

For each set (HH-RLHF harmless test, PandaLM test; $RLAIF_SHARED_DATA or ../shared/data) the embedded
judge's per-principle evidence is computed once for every pair (rlaif/fit_weights.py
``gather_evidence``: score(A) - score(B) per principle, every principle applies), the non-tie pairs
are split in two disjoint halves by a content hash of the pair, and the weights are fitted
(rlaif/fit_weights.py ``fit``) on one half and measured on the other, both ways round. Printed, per
set and direction: accuracy on the measured half (non-tie human labels; a judge tie or no verdict
counts as wrong) with its 95% Wilson interval, for "longer response wins" and "shorter response wins"
(characters), the constitution's weights, the weights fitted on the principles only, and on the
principles plus the length feature; then weights fitted on all of one set measured on all of the
other (do the features generalise across sets?), and the fitted weights themselves. ``--sets`` adds LLMBar and
MT-Bench human.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("RLAIF_SHARED_DATA") or ROOT.parent / "shared" / "data")
SETS = {"HH-RLHF harmless": "hh_rlhf_harmless_test.jsonl", "PandaLM": "pandalm_test.jsonl",
        "LLMBar": "llmbar.jsonl", "MT-Bench human": "mtbench_human_turn1.jsonl"}


def accuracy(votes: list[str | None], human: list[str]) -> tuple[float, tuple[float, float], int]:
    from rlaif.evaluate import agreement, wilson

    a = agreement(human, votes)
    return a["accuracy"], wilson(round(a["accuracy"] * a["n"]), a["n"]), a["n"]


def length_vote(row: dict, longer: bool) -> str:
    la, lb = len(row["response_a"]), len(row["response_b"])
    if la == lb:
        return "tie"
    return "A" if (la > lb) == longer else "B"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--constitution", default=str(ROOT / "constitutions" / "helpful_harmless.yaml"))
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--limit", type=int, default=None, help="first N pairs of each set (a quick look)")
    ap.add_argument("--sets", nargs="+", default=list(SETS)[:2], choices=list(SETS),
                    help="the sets (default: HH-RLHF harmless and PandaLM); weights fitted on all of each set are "
                         "measured on every other set")
    args = ap.parse_args()

    from rlaif.config import JudgeConfig
    from rlaif.constitution import load_constitution
    from rlaif.eval_judge import load_ab_pairs
    from rlaif.fit_weights import fit, gather_evidence
    from rlaif.hashing import content_hash
    from rlaif.judges import make_judge
    from rlaif.train.hf import quiet_hf

    quiet_hf()
    constitution = load_constitution(args.constitution)
    ids = [p.id for p in constitution.principles]
    jcfg = JudgeConfig(constitution=args.constitution, backend="embedding", model="minilm")
    judge = make_judge(jcfg)
    data = {}
    for name in args.sets:
        fname = SETS[name]
        rows = [r for r in load_ab_pairs(SHARED / "prefs" / fname, args.limit) if r["label"] in ("A", "B")]
        t0 = time.perf_counter()
        ev = gather_evidence(judge, constitution, rows, jcfg)
        half = [int(content_hash([r["prompt"], r["response_a"], r["response_b"]], 8), 16) % 2 for r in rows]
        data[name] = (rows, ev, half)
        print(f"{name}: {len(rows)} non-tie pairs judged in {time.perf_counter() - t0:.0f}s "
              f"(halves {half.count(0)} / {half.count(1)})", file=sys.stderr)

    def measure(rows, ev, fitted_p, fitted_pl) -> dict:
        human = [r["label"] for r in rows]
        return {"longer wins": accuracy([length_vote(r, True) for r in rows], human),
                "shorter wins": accuracy([length_vote(r, False) for r in rows], human),
                "constitution weights": accuracy([e.constitution_vote for e in ev], human),
                "fitted: principles": accuracy([fitted_p.vote(e) for e in ev], human),
                "fitted: principles + length": accuracy([fitted_pl.vote(e) for e in ev], human)}

    def fit_on(rows, ev):
        y = [r["label"] == "A" for r in rows]
        return fit(ev, y, ids, args.l2, False), fit(ev, y, ids, args.l2, True)

    results, weights = [], {}
    for name, (rows, ev, half) in data.items():
        for fit_half in (0, 1):
            tr = [i for i, h in enumerate(half) if h == fit_half]
            te = [i for i, h in enumerate(half) if h != fit_half]
            fp, fpl = fit_on([rows[i] for i in tr], [ev[i] for i in tr])
            weights[f"{name}, half {fit_half}"] = (fp, fpl)
            results.append((name, f"fit on half {fit_half} ({len(tr)}), measured on half {1 - fit_half}",
                            measure([rows[i] for i in te], [ev[i] for i in te], fp, fpl)))
    for src in data:
        fp, fpl = fit_on(data[src][0], data[src][1])
        weights[f"{src}, all"] = (fp, fpl)
        for dst in data:
            if dst != src:
                results.append((dst, f"fit on all of {src}", measure(data[dst][0], data[dst][1], fp, fpl)))

    cols = ["longer wins", "shorter wins", "constitution weights", "fitted: principles", "fitted: principles + length"]
    print(f"constitution {constitution.name} ({constitution.hash}), embedded judge (MiniLM), l2 {args.l2}\n")
    print("| measured on | weights fitted | n | " + " | ".join(cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for dst, how, m in results:
        cells = [f"{m[c][0]:.3f} ({m[c][1][0]:.3f}-{m[c][1][1]:.3f})" for c in cols]
        print(f"| {dst} | {how} | {m[cols[0]][2]} | " + " | ".join(cells) + " |")
    print("\nfitted weights (principles + length; intercept = first-position preference):\n")
    print("| fitted on | " + " | ".join(ids) + " | length | intercept |")
    print("|---|" + "---|" * (len(ids) + 2))
    for k, (_, fpl) in weights.items():
        print(f"| {k} | " + " | ".join(f"{fpl.weights[i]:+.2f}" for i in ids)
              + f" | {fpl.length:+.2f} | {fpl.intercept:+.2f} |")
    print("\nconstitution weights: " + ", ".join(f"{p.id} {p.weight:g}" for p in constitution.principles))
    return 0


if __name__ == "__main__":
    sys.exit(main())

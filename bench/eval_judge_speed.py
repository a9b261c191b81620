"""`rlaif eval-judge` with the embedded judge: this checkout against an earlier commit, side by side.

    python bench/eval_judge_speed.py [--ref b371634] [--pairs FILE] [--repeats 1]

Checks the earlier commit out into a temporary git worktree and runs the same command from both
(alternating, so machine load hits both alike), each in its own process: wall time and the figures
(accuracy, kappa, n, unscored, per principle), which must be identical. Target (issue #9): this checkout takes at
most a third of the earlier wall time. The earlier commit sends ~7 texts per encoder call; this one
hands the encoder its texts in large batches (the judging core's batches of
``capabilities.batch_items`` score requests; the encoder sorts each call by length).

It also prints the floor that identical figures allow on this machine: the multiply-adds of
the encoder's linear layers over the tokens it must read (each distinct response once,
truncated as the encoder truncates), divided by the float32 matrix-multiply rate measured here
on the encoder's own layer shapes. Only the linear layers are counted (attention scores,
GELU and layer norms come on top), so no float32 implementation of the same model on the
same texts can be faster than that; a lower-precision one (bfloat16, int8) would change the
scores, and so the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The shared data next to the main checkout (../shared/data), or $RLAIF_SHARED_DATA.
SHARED = Path(os.environ.get("RLAIF_SHARED_DATA") or ROOT.parent / "shared" / "data")
PAIRS = SHARED / "prefs" / "hh_rlhf_harmless_test.jsonl"
# The figures that must be identical (calls may differ: identical requests are now made once).
FIGURES = ("accuracy", "kappa", "n", "unscored", "judge_ties", "judge_unscored", "pairs", "human_ties")


def run(tree: Path, pairs: Path, out: Path) -> tuple[float, dict]:
    env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "rlaif", "eval-judge", "--pairs", str(pairs), "--constitution",
           str(ROOT / "constitutions" / "helpful_harmless.yaml"), "--json", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, json.loads(out.read_text())


def encoder_floor(pairs: Path) -> dict:
    """The float32 compute floor of embedding the file's responses with the embedded judge's encoder."""
    import torch

    from rlaif.eval_judge import load_ab_pairs
    from rlaif.judges.embedding import load_encoder

    rows = load_ab_pairs(pairs)
    texts = list(dict.fromkeys(r[k] for r in rows for k in ("response_a", "response_b") if r[k].strip()))
    enc = load_encoder("minilm")
    tokens = sum(len(i) for i in enc.tokenizer(texts, truncation=True, max_length=enc.max_seq_length)["input_ids"])
    cfg = enc[0].auto_model.config
    h, inner, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    # per token and layer: q, k, v, output projections (4 h x h) and the feed-forward pair (2 h x inner)
    flops_per_token = 2 * layers * (4 * h * h + 2 * h * inner)
    # The best of five timings of one layer's linear maps on a batch of 64 typical texts' tokens.
    x, y = torch.randn(64 * 48, h), torch.randn(64 * 48, inner)
    w_hh, w_hi, w_ih = torch.randn(h, h), torch.randn(h, inner), torch.randn(inner, h)
    per_layer = 2 * x.shape[0] * (4 * h * h + 2 * h * inner)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(6):
            t0 = time.perf_counter()
            for _ in range(4):
                x @ w_hh
            x @ w_hi
            y @ w_ih
            best = min(best, time.perf_counter() - t0)
    rate = per_layer / best
    return {"texts": len(texts), "tokens": tokens, "gflop": tokens * flops_per_token / 1e9,
            "gflop_per_s": rate / 1e9, "threads": torch.get_num_threads(),
            "floor_s": tokens * flops_per_token / rate}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", default="b371634", help="the earlier commit (default: before the change)")
    ap.add_argument("--pairs", type=Path, default=PAIRS)
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old), a.ref], check=True)
        try:
            times: dict[str, list[float]] = {"old": [], "new": []}
            figs: dict[str, dict] = {}
            for _ in range(a.repeats):
                for name, tree in (("old", old), ("new", ROOT)):
                    t, f = run(tree, a.pairs, Path(tmp) / f"{name}.json")
                    times[name].append(t)
                    figs[name] = f
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
    print(f"eval-judge, embedded judge, {a.pairs.name} ({a.repeats} run(s) each, best wall time)")
    for name, label in (("old", f"{a.ref} (before)"), ("new", "this checkout")):
        f = figs[name]
        print(f"  {label:24s} wall {min(times[name]):7.1f} s   " +
              "  ".join(f"{k} {f.get(k)}" for k in ("accuracy", "kappa", "n", "unscored", "calls")))
        for pid, pp in f.get("per_principle", {}).items():
            print(f"      {pid:32s} accuracy {pp['accuracy']}  kappa {pp['kappa']}  n {pp['n']}")
    ratio = min(times["new"]) / min(times["old"])
    same = all(figs["old"].get(k) == figs["new"].get(k) for k in FIGURES) and \
        figs["old"].get("per_principle") == figs["new"].get("per_principle")
    print(f"  new / old wall time: {ratio:.2f} (target <= 0.33: {'met' if ratio <= 1 / 3 else 'MISSED'}); "
          f"figures identical (overall and per principle, floats compared exactly): {same}")
    fl = encoder_floor(a.pairs)
    print(f"  float32 floor: {fl['texts']} distinct responses, {fl['tokens']} tokens, {fl['gflop']:.0f} GFLOP in the "
          f"encoder's linear layers at {fl['gflop_per_s']:.0f} GFLOP/s ({fl['threads']} threads, measured now) = "
          f"{fl['floor_s']:.1f} s = {fl['floor_s'] / min(times['old']):.2f} of the old wall time")

if __name__ == "__main__":
    main()

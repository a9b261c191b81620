"""Benchmark: the judge reward's overhead in an online RL (PPO) step.

    python bench/judge_reward.py [--steps 8] [--repeats 3] [--latency 0.05] [--concurrency 32] [--threads 1]
                                 [--method pointwise|pairwise]

On the quickstart's tiny policy (GPT-2 shape of pipelines/quickstart.yaml, built untrained from
the demo SFT corpus: step time does not depend on the weights), ``rlaif.train.ppo.run_ppo`` with
the quickstart's PPO shape (16 rollouts of at most 32 new tokens per step, 2 PPO epochs of
mini-batches of 8) on the demo prompts, rewarded by:

1. ``reward_model``: the reward-model scorer of the pipeline (``RewardScorer``) on a MiniLM
   sequence classifier (the quickstart's RM base, scalar head untrained);
2. ``judge (cold)``: the judge reward (rlaif/judges/reward.py) through rlaif's openai backend
   against rlaif/testing/fake_openai.py in its own process with LATENCY seconds per call, at
   ``judge.concurrency`` CONCURRENCY, the constitutions/helpful_harmless.yaml principles that
   apply to each prompt's category (pointwise 1-9 rubric, digit probabilities from a hash of the
   request), the call cache in a fresh run store;
3. ``judge (cached)``: the same run again on the same store: the same seed samples the same
   rollouts, so every call is a cache hit;
4. ``RM + 0.5 judge (cold)``: the weighted sum ``{reward_model: 1.0, judge: 0.5}``, a fresh store
   (the judge's calls are in flight while the policy, reference, critic and reward model run).

With ``--method pairwise`` the judge rows use the pairwise judge reward
(``policy_training.judge_reward.method: pairwise``): each rollout against a reference response of its
prompt in both orders (2 calls per rollout and principle instead of 1); the fake server answers the
A/B question with P(A) from a hash of the request. The references here are the demo SFT corpus's
response to the prompt where it has one, else a fixed sentence: the overhead does not depend on them.

Step time: the median of the per-step ``seconds`` of PPO's history, leaving out step 1 (first-call
costs: connections), after a 2-step warm-up PPO run and a warm-up RM call (imports, first-use
costs), then the median over REPEATS repeats (the order of the four runs rotates; the cached run
always follows its cold run); ratio = judge / reward model (target: <= 1.5 at 50 ms, 32).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The fake server's responder: digit probabilities (pointwise) or P(A) (pairwise) from a hash of the
# request, so different responses get different scores (and the same request the same answer).
NAMES = ["reward_model", "judge (cold)", "judge (cached)", "RM + 0.5 judge (cold)"]
SERVER = """
import hashlib, sys, time
from rlaif.testing.fake_openai import FakeOpenAI, digits, messages_text, prefers

def dist(req):
    h = hashlib.sha256(messages_text(req).encode()).digest()
    w = [b + 1 for b in h[:9]]
    return {str(d + 1): w[d] / sum(w) for d in range(9)}

pointwise = digits(dist)
pairwise = prefers(lambda req: 0.05 + 0.9 * hashlib.sha256(messages_text(req).encode()).digest()[0] / 255)

def responder(req):
    return pairwise(req) if 'label="B"' in messages_text(req) else pointwise(req)

with FakeOpenAI(latency_s=float(sys.argv[2]), responder=responder, port=int(sys.argv[1])):
    while True:
        time.sleep(3600)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(latency)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise SystemExit("the fake OpenAI server did not start")
    return proc, f"http://127.0.0.1:{port}/v1"


def build_policy_and_rm(tmp: Path) -> tuple[Path, Path, list[str], dict[str, str | None], dict[str, str]]:
    from transformers import AutoModelForSequenceClassification

    from rlaif.config import TinyModel
    from rlaif.formats import policy_prompt
    from rlaif.train.hf import load_tokenizer
    from rlaif.train.reward import resolve_base
    from rlaif.train.tiny import EOS, build_tiny_model

    read = lambda name: [json.loads(x) for x in (ROOT / "data/demo" / name).read_text().splitlines() if x.strip()]  # noqa: E731
    sft, rows = read("sft.jsonl"), read("prompts.jsonl")
    prompts = [r["text"] for r in rows]
    categories = {r["text"]: r.get("category") for r in rows}
    answers = {r["prompt"]: r["response"] for r in sft if isinstance(r.get("prompt"), str)}
    references = {p: answers.get(p, "Here is a short, careful answer.") for p in prompts}
    policy = tmp / "policy"
    build_tiny_model([policy_prompt(r["prompt"]) + r["response"] + EOS for r in sft] + prompts,
                     TinyModel(vocab_size=2048, n_layer=3, n_head=4, n_embd=128, n_positions=256), policy)
    base = resolve_base("minilm")
    rm = tmp / "rm"
    AutoModelForSequenceClassification.from_pretrained(base, num_labels=1).save_pretrained(str(rm))
    load_tokenizer(base).save_pretrained(str(rm))
    return policy, rm, prompts, categories, references


def ppo_cfg(steps: int):
    from rlaif.config import PolicyTrainingConfig

    return PolicyTrainingConfig(algorithm="ppo", train={"learning_rate": 5e-5, "max_length": 160,
                                                        "save_steps": 10_000},
                                ppo={"steps": steps, "rollout_batch_size": 16, "mini_batch_size": 8,
                                     "ppo_epochs": 2, "max_new_tokens": 32})


def run(policy: Path, reward, prompts: list[str], steps: int, out: Path) -> dict:
    from rlaif.train.ppo import run_ppo

    t0 = time.perf_counter()
    info = run_ppo(policy, reward, prompts, ppo_cfg(steps), out, progress=None)
    wall = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    h = info["history"]
    return {"wall": wall, "step_s": statistics.median(x["seconds"] for x in h[1:]) if len(h) > 1 else h[0]["seconds"],
            "rollout_s": statistics.median(x["rollout_seconds"] for x in h[1:]) if len(h) > 1 else None,
            "calls": sum(x.get("judge_calls", 0) for x in h), "hits": sum(x.get("judge_cache_hits", 0) for x in h),
            "unscored": sum(x.get("judge_unscored", 0) for x in h), "rollouts": 16 * len(h),
            "reward": [round(x["reward"], 4) for x in h]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--method", choices=("pointwise", "pairwise"), default="pointwise",
                    help="the judge reward's method (policy_training.judge_reward.method)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: tiny models on a shared CPU time best with one)")
    args = ap.parse_args()
    import torch

    from rlaif.config import JudgeConfig, RewardWeights
    from rlaif.constitution import load_constitution
    from rlaif.judges.reward import judge_reward_for
    from rlaif.train.hf import quiet_hf
    from rlaif.train.reward import RewardScorer
    from rlaif.train.rewards import combine

    quiet_hf()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="rlaif-bench-judge-reward-"))
    proc, base_url = start_server(args.latency)
    try:
        policy, rm_dir, prompts, categories, references = build_policy_and_rm(tmp)
        references = references if args.method == "pairwise" else None
        con_path = ROOT / "constitutions/helpful_harmless.yaml"
        constitution = load_constitution(con_path)
        jcfg = JudgeConfig(backend="openai", model="fake-judge", constitution=str(con_path), base_url=base_url,
                           concurrency=args.concurrency, max_retries=2)
        store = tmp / "store.sqlite"
        rm = RewardScorer(rm_dir, "cpu", 128, batch_size=16).score
        run(policy, lambda ps, rs: [len(r.split()) / 10 for r in rs], prompts, 2, tmp / "out")  # warm-up
        rm(prompts[:16], prompts[:16])
        rows: dict[str, list[dict]] = {n: [] for n in NAMES}
        for i in range(args.repeats):  # the order rotates, so drifting machine load hits each alike
            store, both = tmp / f"store{i}.sqlite", tmp / f"both{i}.sqlite"
            units = [["reward_model"], ["judge (cold)", "judge (cached)"], ["RM + 0.5 judge (cold)"]]
            for name in [n for u in units[i % 3:] + units[:i % 3] for n in u]:
                if name == "reward_model":
                    rows[name].append(run(policy, rm, prompts, args.steps, tmp / "out"))
                    continue
                judge = judge_reward_for(jcfg, constitution, categories, both if "RM" in name else store, "cpu", 0,
                                         references)
                reward = combine(RewardWeights(reward_model=1.0, judge=0.5), rm, judge) if "RM" in name else judge
                rows[name].append(run(policy, reward, prompts, args.steps, tmp / "out"))
                judge.close()
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    from rich.console import Console
    from rich.table import Table

    med = {n: statistics.median(r["step_s"] for r in rs) for n, rs in rows.items()}
    base = med["reward_model"]
    t = Table(title=f"PPO step with {args.method} judge rewards vs reward-model rewards (tiny policy, 16 rollouts/step, "
                    f"fake server {args.latency * 1000:.0f} ms/call, concurrency {args.concurrency}, "
                    f"{args.steps} steps, {args.repeats} repeats)")
    for c in ("reward", "step s (median)", "x reward model", "step s per repeat", "judge calls", "cache hits",
              "unscored"):
        t.add_column(c, justify="right" if c != "reward" else "left")
    for name, rs in rows.items():
        t.add_row(name, f"{med[name]:.3f}", f"{med[name] / base:.2f}x", " ".join(f"{r['step_s']:.2f}" for r in rs),
                  "/".join(str(int(r["calls"])) for r in rs), "/".join(str(int(r["hits"])) for r in rs),
                  "/".join(str(int(r["unscored"])) for r in rs))
    Console(width=160).print(t)
    ratio = med["judge (cold)"] / base
    cached = rows["judge (cached)"]
    same = all(a["reward"] == b["reward"] for a, b in zip(rows["judge (cold)"], cached))
    print(f"judge/RM step time: {ratio:.2f}x (target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'}); "
          f"RM + judge / RM: {med['RM + 0.5 judge (cold)'] / base:.2f}x; cached re-runs: "
          f"{sum(int(r['calls']) for r in cached)} calls, {sum(int(r['hits']) for r in cached)} cache hits, "
          f"same rewards as the cold runs: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

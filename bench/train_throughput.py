"""Benchmark: DPO and PPO training throughput on the quickstart's tiny model, and rlaif's DPO
wrapper against trl's DPOTrainer called directly on the same data in the same process.

    python bench/train_throughput.py [--dpo-steps 30] [--ppo-steps 10] [--repeats 3] [--threads N]

- a tiny GPT-2 (quickstart shape) and its tokenizer are built from the demo SFT corpus (not trained:
  throughput does not depend on the weights);
- DPO data: the demo human preference labels (data/demo/human_labels.jsonl) as a pairs dataset,
  saved like the `mix` stage saves it;
- "rlaif DPO" is ``rlaif.train.dpo.train_dpo`` (what ``train-policy`` runs); "trl DPO" builds the
  same model, DPOConfig and DPOTrainer by hand and trains/saves it. They alternate ``--repeats``
  times; the table shows medians. Overhead = rlaif wall time / trl wall time - 1 (target <= 5%);
- PPO: ``rlaif.train.ppo.run_ppo`` with a python reward (response length in words / 10), so the
  figure is the PPO machinery's own (rollout + reference + critic + optimisation), not the RM's.

Tokens per second: DPO counts prompt+chosen and prompt+rejected tokens (truncated to max_length) of
every pair seen; PPO counts the prompt + response tokens of every rollout batch (per PPO step).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_inputs(tmp: Path, max_length: int):
    from datasets import Dataset, DatasetDict

    from rlaif.config import TinyModel
    from rlaif.formats import policy_prompt
    from rlaif.train.tiny import EOS, build_tiny_model

    sft = [json.loads(x) for x in (ROOT / "data/demo/sft.jsonl").read_text().splitlines() if x.strip()]
    labels = [json.loads(x) for x in (ROOT / "data/demo/human_labels.jsonl").read_text().splitlines() if x.strip()]
    prompts = [json.loads(x)["text"] for x in (ROOT / "data/demo/prompts.jsonl").read_text().splitlines() if x.strip()]
    model_dir = tmp / "model"
    _, tok = build_tiny_model([policy_prompt(r["prompt"]) + r["response"] + EOS for r in sft] + prompts,
                              TinyModel(vocab_size=2048, n_layer=3, n_head=4, n_embd=128, n_positions=256), model_dir)
    rows = {"prompt": [r["prompt"] for r in labels], "chosen": [r["chosen"] for r in labels],
            "rejected": [r["rejected"] for r in labels], "source": ["human"] * len(labels),
            "weight": [1.0] * len(labels), "confidence": [1.0] * len(labels),
            "prompt_id": [str(i) for i in range(len(labels))], "meta": ["{}"] * len(labels)}
    pairs_dir = tmp / "pairs"
    DatasetDict({"train": Dataset.from_dict(rows), "eval": Dataset.from_dict({k: v[:0] for k, v in rows.items()})}
                ).save_to_disk(str(pairs_dir), num_shards={"train": 1, "eval": 1})

    def pair_tokens(p, c, r):
        pp = tok(policy_prompt(p))["input_ids"]
        return (min(max_length, len(pp) + len(tok(c)["input_ids"]) + 1)
                + min(max_length, len(pp) + len(tok(r)["input_ids"]) + 1))

    mean_pair_tokens = statistics.mean(pair_tokens(*x) for x in zip(rows["prompt"], rows["chosen"], rows["rejected"]))
    return model_dir, pairs_dir, prompts, mean_pair_tokens


def pipeline_cfg(pairs_dir: Path, dpo_steps: int, batch: int, max_length: int):
    from rlaif.config import PipelineConfig

    return PipelineConfig.model_validate({
        "name": "bench", "device": "cpu",
        "data": {"prompts": str(ROOT / "data/demo/prompts.jsonl")},
        "judge": {"constitution": str(ROOT / "constitutions/helpful_harmless.yaml")},
        "policy_training": {"algorithm": "dpo", "beta": 0.1,
                            "train": {"max_steps": dpo_steps, "batch_size": batch, "max_length": max_length,
                                      "learning_rate": 2e-4, "save_steps": 10_000}},
    })


def rlaif_dpo(cfg, model_dir: Path, pairs_dir: Path, out: Path) -> tuple[float, float]:
    from rlaif.layout import RunLayout
    from rlaif.train.dpo import train_dpo

    t0 = time.perf_counter()
    info = train_dpo(cfg.policy_training, cfg.seed, RunLayout(out.parent, sft=model_dir, pairs=pairs_dir, policy=out),
                     "cpu")
    wall = time.perf_counter() - t0
    runtime = next(h["train_runtime"] for h in info["history"] if "train_runtime" in h)
    return wall, runtime


def trl_dpo(cfg, model_dir: Path, pairs_dir: Path, out: Path) -> tuple[float, float]:
    """trl's DPOTrainer by hand: the same model, data, arguments; train; save."""
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from rlaif.formats import policy_prompt

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    ds = load_from_disk(str(pairs_dir))["train"]
    ds = ds.map(lambda ex: {"prompt": policy_prompt(ex["prompt"])},
                remove_columns=["source", "weight", "confidence", "prompt_id", "meta"])
    t = cfg.policy_training.train
    args = DPOConfig(output_dir=str(out / "checkpoints"), max_steps=t.max_steps, learning_rate=t.learning_rate,
                     per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=1, seed=cfg.seed,
                     data_seed=cfg.seed, logging_steps=5, save_strategy="steps", save_steps=t.save_steps,
                     save_total_limit=1, report_to="none", disable_tqdm=True, use_cpu=True, bf16=False,
                     dataloader_num_workers=0, lr_scheduler_type="cosine", warmup_steps=0.05,
                     beta=cfg.policy_training.beta, max_length=t.max_length, truncation_mode="keep_start")
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # quiet, as rlaif's progress bar is (no effect on training)
    result = trainer.train()
    trainer.save_model(str(out / "model"))
    tok.save_pretrained(str(out / "model"))
    wall = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return wall, result.metrics["train_runtime"]


def run_ppo_bench(model_dir: Path, prompts: list[str], steps: int, out: Path) -> dict:
    from rlaif.config import PolicyTrainingConfig
    from rlaif.train.ppo import run_ppo

    pcfg = PolicyTrainingConfig(algorithm="ppo", train={"learning_rate": 2e-4, "max_length": 160, "save_steps": 10_000},
                                ppo={"steps": steps, "rollout_batch_size": 16, "mini_batch_size": 8, "ppo_epochs": 2,
                                     "max_new_tokens": 32})
    lengths = lambda ps, rs: [len(r.split()) / 10 for r in rs]  # noqa: E731
    t0 = time.perf_counter()
    info = run_ppo(model_dir, lengths, prompts, pcfg, out, progress=None)
    wall = time.perf_counter() - t0
    h = info["history"]
    train_s = sum(x["seconds"] for x in h)
    tokens = sum(x["tokens"] for x in h)
    gen = sum(x["response_length"] * 16 for x in h)
    return {"wall": wall, "train_s": train_s, "tokens": tokens, "generated": gen,
            "rollout_s": sum(x["rollout_seconds"] for x in h), "steps": len(h), "ppo_epochs": 2}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dpo-steps", type=int, default=30)
    ap.add_argument("--ppo-steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: tiny models on a shared CPU time best with one)")
    args = ap.parse_args()
    import torch

    from rlaif.train.hf import quiet_hf

    quiet_hf()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="rlaif-bench-train-"))
    try:
        model_dir, pairs_dir, prompts, pair_tokens = build_inputs(tmp, args.max_length)
        cfg = pipeline_cfg(pairs_dir, args.dpo_steps, args.batch_size, args.max_length)
        dpo_tokens = args.dpo_steps * args.batch_size * pair_tokens
        trl_dpo(cfg, model_dir, pairs_dir, tmp / "warm")  # warm-up: imports, first-call costs
        ours, theirs = [], []
        for i in range(args.repeats):  # alternate, so drifting machine load hits both alike
            theirs.append(trl_dpo(cfg, model_dir, pairs_dir, tmp / f"trl{i}"))
            ours.append(rlaif_dpo(cfg, model_dir, pairs_dir, tmp / f"rlaif{i}"))
        ppo = run_ppo_bench(model_dir, prompts, args.ppo_steps, tmp / "ppo")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    o_wall, o_train = med(ours, 0), med(ours, 1)
    t_wall, t_train = med(theirs, 0), med(theirs, 1)
    overhead = o_wall / t_wall - 1
    rows = [
        ("trl DPOTrainer, direct", f"{t_wall:.2f}", f"{t_train:.2f}", f"{dpo_tokens / t_train:,.0f}", ""),
        ("rlaif train_dpo (wrapper)", f"{o_wall:.2f}", f"{o_train:.2f}", f"{dpo_tokens / o_train:,.0f}",
         f"{overhead * 100:+.1f}% wall (target <= +5%), {(o_train / t_train - 1) * 100:+.1f}% train"),
        ("rlaif PPO", f"{ppo['wall']:.2f}", f"{ppo['train_s']:.2f}", f"{ppo['tokens'] / ppo['train_s']:,.0f}",
         f"{ppo['steps']} steps x 16 rollouts x {ppo['ppo_epochs']} epochs; "
         f"{ppo['generated'] / ppo['rollout_s']:,.0f} generated tok/s in rollouts "
         f"({ppo['rollout_s'] / ppo['train_s'] * 100:.0f}% of the time)"),
    ]
    print(f"tiny GPT-2 (3 layers, 128 wide, vocab 2048), CPU, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} cores; DPO: {args.dpo_steps} steps x {args.batch_size} pairs, "
          f"{pair_tokens:.0f} tokens/pair; medians of {args.repeats}")
    head = ("run", "wall s", "train s", "tokens/s (train)", "notes")
    widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(5)]
    for r in (head, tuple("-" * w for w in widths), *rows):
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""DPO of the SFT policy on the mixed pairs (trl's DPOTrainer)."""

from __future__ import annotations

from pathlib import Path

from rlaif.config import PipelineConfig
from rlaif.formats import policy_prompt
from rlaif.train.common import train_and_save, trainer_kwargs


def train_dpo(cfg: PipelineConfig, sft_dir: Path, pairs_dir: Path, out_dir: Path, device: str) -> dict:
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    pcfg = cfg.policy_training
    tokenizer = AutoTokenizer.from_pretrained(str(sft_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(sft_dir))
    dd = load_from_disk(str(pairs_dir))
    # trl's DPO loss has no per-example weight: the pairs train with equal weight
    # (the mix's human weight acts through the reward model).
    train = dd["train"].map(lambda ex: {"prompt": policy_prompt(ex["prompt"])},
                            remove_columns=["source", "weight", "confidence", "prompt_id", "meta"])
    work = out_dir.with_name(out_dir.name + ".partial")
    args = DPOConfig(**trainer_kwargs(pcfg.train, work / "checkpoints", cfg.seed, device), beta=pcfg.beta,
                     max_length=pcfg.train.max_length, truncation_mode="keep_start")
    trainer = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    return {"algorithm": "dpo", "train_pairs": len(train),
            **train_and_save(trainer, tokenizer, work, out_dir, "train-policy (dpo)")}

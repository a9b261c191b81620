"""DPO of the SFT policy on the mixed pairs (trl's DPOTrainer)."""

from __future__ import annotations

import os
from pathlib import Path

from rlaif.chat import conversational_dataset
from rlaif.config import PipelineConfig
from rlaif.train.common import train_and_save, trainer_kwargs


def train_dpo(cfg: PipelineConfig, sft_dir: Path, pairs_dir: Path, out_dir: Path, device: str) -> dict:
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    pcfg = cfg.policy_training
    tokenizer = AutoTokenizer.from_pretrained(str(sft_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    from rlaif.train.gpu import lora_config, model_load_kwargs, resolve_bf16

    bf16 = resolve_bf16(pcfg, device)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    model = AutoModelForCausalLM.from_pretrained(str(sft_dir), **model_load_kwargs(pcfg, device, bf16, distributed))
    dd = load_from_disk(str(pairs_dir))
    # trl's DPO loss has no per-example weight: the pairs train with equal weight
    # (the mix's human weight acts through the reward model).
    train = conversational_dataset(tokenizer, dd["train"], chosen="chosen", rejected="rejected")
    work = out_dir.with_name(out_dir.name + ".partial")
    kw = trainer_kwargs(pcfg.train, work / "checkpoints", cfg.seed, device)
    kw.update(bf16=bf16, gradient_checkpointing=pcfg.gradient_checkpointing)
    args = DPOConfig(**kw, beta=pcfg.beta, max_length=pcfg.train.max_length, truncation_mode="keep_start")
    # With LoRA the reference policy is the base model with the adapters switched off (no second copy).
    trainer = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                         peft_config=lora_config(pcfg.lora) if pcfg.lora is not None else None)
    return {"algorithm": "dpo", "train_pairs": len(train),
            **train_and_save(trainer, tokenizer, work, out_dir, "train-policy (dpo)")}

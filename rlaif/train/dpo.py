"""DPO of the SFT policy on the mixed pairs (trl's DPOTrainer)."""

from __future__ import annotations

import os

from rlaif.chat import conversational_dataset
from rlaif.config import PolicyTrainingConfig
from rlaif.layout import RunLayout
from rlaif.train.hf import kept_examples, load_tokenizer, train_and_save, trainer_kwargs


def train_dpo(pcfg: PolicyTrainingConfig, seed: int, layout: RunLayout, device: str, ref_dir=None) -> dict:
    """DPO from ``layout.sft`` on the pairs in ``layout.pairs``; the policy goes to ``layout.policy``.
    The reference is ``layout.sft`` itself, or ``ref_dir`` when given."""
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    tokenizer = load_tokenizer(layout.sft)
    from rlaif.train.gpu import lora_config, model_load_kwargs, resolve_bf16

    bf16 = resolve_bf16(pcfg, device)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    model = AutoModelForCausalLM.from_pretrained(str(layout.sft), **model_load_kwargs(pcfg, device, bf16, distributed))
    dd = load_from_disk(str(layout.pairs))
    # trl's DPO loss has no per-example weight: the pairs train with equal weight
    # (the mix's human weight acts through the reward model).
    train = conversational_dataset(tokenizer, dd["train"], chosen="chosen", rejected="rejected")
    kw = trainer_kwargs(pcfg.train, layout.checkpoints(layout.policy), seed, device, pcfg.gradient_checkpointing)
    kw.update(bf16=bf16)
    args = DPOConfig(**kw, beta=pcfg.beta, max_length=pcfg.train.max_length, truncation_mode="keep_start",
                     loss_type=list(pcfg.dpo.loss_type), loss_weights=pcfg.dpo.loss_weights)
    # With LoRA the reference policy is the base model with the adapters switched off (no second copy).
    ref = None if ref_dir is None else AutoModelForCausalLM.from_pretrained(
        str(ref_dir), **model_load_kwargs(pcfg, device, bf16, distributed, trainable=False))
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=train, processing_class=tokenizer,
                         peft_config=lora_config(pcfg.lora) if pcfg.lora is not None else None)
    dropped = kept_examples(trainer, len(train), "train-policy (dpo)", "pairs", "policy_training.train.max_length",
                            pcfg.train.max_length)
    return {"algorithm": "dpo", "train_pairs": len(trainer.train_dataset), **dropped,
            **train_and_save(trainer, tokenizer, layout.policy, "train-policy (dpo)")}

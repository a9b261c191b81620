"""SFT of the policy with trl's SFTTrainer (prompt/completion format)."""

from __future__ import annotations

import logging
from pathlib import Path

from rlaif.chat import conversational_dataset, with_system_all
from rlaif.config import PipelineConfig
from rlaif.formats import policy_prompt
from rlaif.records import load_sft
from rlaif.train.common import train_and_save, trainer_kwargs

log = logging.getLogger(__name__)


def run_sft(cfg: PipelineConfig, out_dir: Path, extra_texts: list[str], device: str) -> dict:
    """Train the SFT policy into ``out_dir``; return metrics and log history."""
    from trl import SFTConfig, SFTTrainer

    rows = with_system_all(load_sft(cfg.policy.sft_data), cfg.data.system_prompt)  # validated earlier
    work = out_dir.with_name(out_dir.name + ".partial")
    if cfg.policy.model == "tiny":
        from rlaif.train.tiny import EOS, build_tiny_model

        init_dir = work / "init"
        if not (init_dir / "config.json").exists():
            texts = [policy_prompt(r["prompt"]) + r["response"] + EOS for r in rows] + extra_texts
            build_tiny_model(texts, cfg.policy.tiny, init_dir, seed=cfg.seed)
        model_ref = str(init_dir)
    else:
        model_ref = cfg.policy.model

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_ref)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_ref)
    ds = conversational_dataset(tokenizer, rows, completion="response")  # the chat template's rendering
    targs = cfg.policy.sft
    args = SFTConfig(
        **trainer_kwargs(targs, work / "checkpoints", cfg.seed, device),
        max_length=targs.max_length,
        completion_only_loss=True,
        packing=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    return {"examples": len(rows), **train_and_save(trainer, tokenizer, work, out_dir, "sft")}
